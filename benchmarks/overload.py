"""Overload: bursts of ``--factor`` x the queue capacity, all at once, against the real service.

    python -m benchmarks.overload [--queue-size 16] [--factor 10] [--rounds 5] [--request-timeout 5]
                                  [--json reports/reliability/overload.json]

Starts ``python -m service`` on loopback with ``FACEPARSE_MAX_QUEUE_SIZE=--queue-size`` and
``FACEPARSE_CLIENT_SHARE=--client-share`` (other settings default), warms it with one full batch, then
each round sends ``factor x queue-size`` ``/parse`` requests of a 512 px face photo at the same instant.
Reported per round: requests sent, answered 200 (and whether each answer equals the one the photo gets
alone), rejected 503, timed out 504, other, max latency (overall and of the 503s), a ``/healthz`` sent
mid-burst, the queue-depth metric once the burst is over, and the server's resident memory before the first
burst and after each (once settled).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.servers import running, service_spec
from benchmarks.soak import REPO_ROOT, face_photos, metric_value, rss_mb, server_errors_logged, thread_count


def label_map(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im)


async def timed_post(client: httpx.AsyncClient, photo: bytes) -> tuple[int | str, float, bytes]:
    start = time.perf_counter()
    try:
        r = await client.post("/parse", files={"image": ("face.jpg", photo, "image/jpeg")})
        status, body = r.status_code, r.content
    except httpx.HTTPError as exc:
        status, body = type(exc).__name__, b""
    return status, time.perf_counter() - start, body


async def timed_health(client: httpx.AsyncClient, delay_s: float) -> float:
    await asyncio.sleep(delay_s)
    start = time.perf_counter()
    (await client.get("/healthz")).raise_for_status()
    return time.perf_counter() - start


async def burst(base_url: str, photo: bytes, n: int, timeout_s: float):
    """``n`` requests at once (one connection each) plus a health check 0.1 s in."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        return await asyncio.gather(timed_health(client, 0.1), *(timed_post(client, photo) for _ in range(n)))


def settle(base_url: str, pid: int, timeout_s: float = 60.0, quiet_s: float = 3.0) -> tuple[float | None, float]:
    """Wait for the queue-depth metric to read 0, then ``quiet_s``; (depth, RSS MiB) after."""
    deadline = time.monotonic() + timeout_s
    while metric_value(base_url, "faceparse_queue_depth") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(quiet_s)
    return metric_value(base_url, "faceparse_queue_depth"), rss_mb(pid)


def run_round(base_url: str, pid: int, photo: bytes, reference: np.ndarray, n: int, client_timeout_s: float) -> dict:
    health_s, *answers = asyncio.run(burst(base_url, photo, n, client_timeout_s))
    statuses = Counter(str(status) for status, _, _ in answers)
    ok = [label_map(body) for status, _, body in answers if status == 200]
    differing = [float((m != reference).mean()) for m in ok]
    depth_after, rss_after = settle(base_url, pid)
    rejected = [elapsed for status, elapsed, _ in answers if status == 503]
    return {
        "sent": n, "answered_200": statuses.pop("200", 0), "rejected_503": statuses.pop("503", 0),
        "timeout_504": statuses.pop("504", 0), "other": dict(statuses),
        "answers_identical_to_alone": sum(d == 0 for d in differing),
        "max_pixels_differing": round(max(differing, default=0.0), 5),
        "max_latency_s": round(max(elapsed for _, elapsed, _ in answers), 3),
        "max_503_latency_s": round(max(rejected), 3) if rejected else None,
        "healthz_mid_burst_ms": round(health_s * 1000, 1),
        "queue_depth_after": depth_after, "rss_after_mb": round(rss_after, 1), "threads_after": thread_count(pid),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queue-size", type=int, default=16, help="FACEPARSE_MAX_QUEUE_SIZE")
    ap.add_argument("--factor", type=int, default=10, help="burst size as a multiple of the queue size")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--request-timeout", type=float, default=5.0, help="FACEPARSE_REQUEST_TIMEOUT_S")
    ap.add_argument("--max-in-flight", type=int, default=0, help="FACEPARSE_MAX_IN_FLIGHT (0: queue + batch)")
    ap.add_argument("--client-share", type=float, default=1.0, help="FACEPARSE_CLIENT_SHARE: one client sends the "
                    "whole burst, so 1 measures the service's bounds (the default 0.25 answers most with 429)")
    ap.add_argument("--model", default=str(REPO_ROOT / "models" / "face-parser"))
    ap.add_argument("--json", type=Path, default=REPO_ROOT / "reports" / "reliability" / "overload.json")
    args = ap.parse_args(argv)
    photo = face_photos()["512.jpg"]
    n = args.factor * args.queue_size
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "service.log"
        spec = service_spec(args.model, max_queue_size=args.queue_size, request_timeout_s=args.request_timeout,
                            max_in_flight=args.max_in_flight, client_share=args.client_share)
        with running(spec, log_path) as service:
            model = httpx.get(service.base_url + "/v1/model", timeout=10).json()
            status, _, body = asyncio.run(burst(service.base_url, photo, 1, 60))[1]
            assert status == 200, f"a single request answered {status}"
            reference = label_map(body)
            asyncio.run(burst(service.base_url, photo, model["batching"]["max_batch_size"], 60))  # one full batch
            _, rss_before = settle(service.base_url, service.pid)
            threads_before = thread_count(service.pid)
            print(f"model {model['version']} on {model['device']}, batching {model['batching']}")
            print(f"burst of {n} = {args.factor} x queue {args.queue_size}; RSS before {rss_before:.1f} MiB")
            rounds = []
            for i in range(args.rounds):
                rounds.append(run_round(service.base_url, service.pid, photo, reference, n,
                                        client_timeout_s=args.request_timeout + 60))
                print(f"round {i + 1}: {json.dumps(rounds[-1])}")
            rejected_metric = sum(metric_value(service.base_url, "faceparse_rejected_total", reason=r) or 0
                                  for r in ("in_flight", "queue_full"))
        logged = server_errors_logged(log_path)
    result = {"model": model["version"], "device": model["device"], "batching": model["batching"],
              "burst": n, "rss_before_mb": round(rss_before, 1), "threads_before": threads_before, "rounds": rounds,
              "rejected_total_metric": rejected_metric, "server_errors_logged": logged}
    first, last = rounds[0], rounds[-1]
    print(f"\nround 1: sent {first['sent']}, 200 {first['answered_200']}, 503 {first['rejected_503']}, "
          f"504 {first['timeout_504']}, other {sum(first['other'].values())}; max latency {first['max_latency_s']} s "
          f"(503s within {first['max_503_latency_s']} s); queue depth after {first['queue_depth_after']}")
    print(f"RSS before {rss_before:.1f} MiB ({threads_before} threads), after round 1 {first['rss_after_mb']} MiB "
          f"({(first['rss_after_mb'] / rss_before - 1) * 100:+.1f} %, {first['threads_after']} threads), after round "
          f"{len(rounds)} {last['rss_after_mb']} MiB ({(last['rss_after_mb'] / rss_before - 1) * 100:+.1f} %, "
          f"{last['threads_after']} threads); faceparse_rejected_total {rejected_metric:.0f} = "
          f"{sum(r['rejected_503'] for r in rounds)} 503s; server tracebacks/ERROR lines {logged}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"json: {args.json}")
    return result


if __name__ == "__main__":
    main()
