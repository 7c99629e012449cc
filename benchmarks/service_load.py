"""Load benchmark: the service against a plain FastAPI handler and LitServe, on loopback.

    python -m benchmarks.service_load [--images DIR] [--concurrency 1 4 16] [--requests 96] [--rounds 3]
                                      [--servers ours plain litserve] [--faces whole auto] [--processes 1 4]
                                      [--json out.json]

Each server runs as a real process (uvicorn) on a loopback port with the same model; an async
client sends ``POST /parse?format=png`` with face photos at each concurrency. Every round measures
the model's own forward pass in-process on the same photos (batch 1 and 8 by default), then starts
each server in turn, loads it and stops it: a machine whose speed drifts during the run (shared
cores) shifts every figure alike. Throughput and the forward pass are medians over
rounds; latency percentiles are over all rounds' requests. Without ``--images`` the photos are
drawn by ``tests/conftest.py::draw_face`` (512 x 512 JPEG). The LitServe baseline needs the
``bench`` extra. ``--faces whole auto`` measures the service (``ours``) with each ``faces`` mode in
the same server run (rows ``ours`` and ``ours:auto``); the baselines always parse the photo whole.
``--neighbour N`` measures every level twice in the same server run, quiet and then next to ``N``
processes that each keep a core busy at a higher priority (rows ``...+busy``): a shared machine, or a
container over its CPU quota. ``--processes 1 4`` measures the service once per ``FACEPARSE_PROCESSES``
value (rows ``ours`` and ``ours-p4``), each measured once all its processes are ready.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from itertools import product
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.model_speed import time_forward
from benchmarks.neighbour import busy_neighbour
from benchmarks.servers import SERVERS, ServerSpec, running, server_spec
from face_parser.modeling import FaceParser
from face_parser.postprocess import label_map_bounded
from face_parser.preprocess import resize_rgb, to_pixel_values
from service.imaging import decode_image
from service.settings import Settings

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
# One forward pass per photo, as the baselines do: faces=whole skips the service's face finding;
# a server without that parameter ignores it.
PARSE_PARAMS = {"format": "png", "faces": "whole"}
NO_PIXEL_LIMIT = 10**9


@dataclass
class Photo:
    name: str
    data: bytes
    content_type: str


@dataclass
class RoundResult:
    latencies_s: list[float]
    errors: int
    wall_s: float
    client_cpu_s: float = 0.0  # CPU time of this load generator (it shares the cores with the server)


@dataclass
class LevelStats:
    """One server at one concurrency: median throughput over rounds, percentiles over all requests."""

    server: str
    concurrency: int
    requests: int
    errors: int
    img_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float | None
    client_cpu_ms: float = float("nan")  # load generator's CPU time per request


def load_photos(images_dir: str | None, count: int) -> list[Photo]:
    """``count`` photos from ``images_dir`` (sorted), or drawn faces (512 x 512 JPEG) without one."""
    if images_dir:
        if not Path(images_dir).is_dir():
            raise SystemExit(f"--images {images_dir}: no such folder")
        files = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)[:count]
        if not files:
            raise SystemExit(f"--images {images_dir}: no {'/'.join(sorted(PHOTO_SUFFIXES))} files there")
        return [Photo(p.name, p.read_bytes(), Image.MIME[Image.registered_extensions()[p.suffix.lower()]])
                for p in files]
    from tests.conftest import draw_face  # the test suite's face drawing

    photos = []
    for seed in range(count):
        buf = io.BytesIO()
        Image.fromarray(draw_face(512, seed=seed)[0]).save(buf, format="JPEG", quality=90)
        photos.append(Photo(f"face{seed}.jpg", buf.getvalue(), "image/jpeg"))
    return photos


def percentile_ms(latencies_s: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation) of ``latencies_s``, in ms; NaN when empty."""
    if not latencies_s:
        return float("nan")
    return float(np.percentile(np.asarray(latencies_s) * 1000.0, q))


def summarize(server: str, concurrency: int, rounds: list[RoundResult], mean_batch: float | None) -> LevelStats:
    latencies = [t for r in rounds for t in r.latencies_s]
    return LevelStats(
        server, concurrency, requests=sum(len(r.latencies_s) + r.errors for r in rounds),
        errors=sum(r.errors for r in rounds),
        img_per_s=statistics.median(len(r.latencies_s) / r.wall_s for r in rounds),
        p50_ms=percentile_ms(latencies, 50), p95_ms=percentile_ms(latencies, 95), p99_ms=percentile_ms(latencies, 99),
        mean_batch=mean_batch,
        client_cpu_ms=1000.0 * sum(r.client_cpu_s for r in rounds) / max(1, sum(len(r.latencies_s) + r.errors
                                                                                 for r in rounds)),
    )


def batch_totals(metrics_text: str) -> tuple[float, float]:
    """``(sum, count)`` of the service's ``faceparse_batch_size`` histogram in Prometheus text."""
    totals = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "faceparse_batch_size":
            totals = {s.name: s.value for s in family.samples}
    return totals.get("faceparse_batch_size_sum", 0.0), totals.get("faceparse_batch_size_count", 0.0)


def median_forward(measurements: list[dict]) -> dict:
    """Per batch size, the median over rounds of ``{"ms_per_image", "img_per_s"}``."""
    keys = ("ms_per_image", "img_per_s")
    return {batch: {key: statistics.median(m[batch][key] for m in measurements) for key in keys}
            for batch in measurements[0]}


async def run_round(client: httpx.AsyncClient, url: str, photos: list[Photo], concurrency: int,
                    n_requests: int, params: dict[str, str] = PARSE_PARAMS) -> RoundResult:
    """``n_requests`` requests from ``concurrency`` workers, each sending its next photo when answered."""
    latencies: list[float] = []
    errors = 0
    sent = 0

    async def worker() -> None:
        nonlocal errors, sent
        while sent < n_requests:
            photo = photos[sent % len(photos)]
            sent += 1
            start = time.perf_counter()
            try:
                r = await client.post(url, params=params,
                                      files={"image": (photo.name, photo.data, photo.content_type)})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return RoundResult(latencies, errors, time.perf_counter() - start, time.process_time() - cpu_start)


def forward_reference(parser: FaceParser, photos: list[Photo], batches: list[int], repeats: int) -> dict:
    """In-process forward pass on the photos: ``{batch: {"ms_per_image", "img_per_s"}}``."""
    resized = [resize_rgb(decode_image(p.data, NO_PIXEL_LIMIT), parser.preprocess.size) for p in photos]
    results = {}
    for batch in batches:
        pixel_values = to_pixel_values([resized[i % len(resized)] for i in range(batch)], parser.preprocess)
        seconds = time_forward(parser, batch, repeats, pixel_values)
        results[batch] = {"ms_per_image": seconds / batch * 1000.0, "img_per_s": batch / seconds}
    return results


def expected_labels(parser: FaceParser, photo: Photo) -> np.ndarray:
    """The in-process ``format=png`` answer for ``photo``: ``(H, W)`` uint8 class ids."""
    image = decode_image(photo.data, NO_PIXEL_LIMIT)
    return label_map_bounded(parser.score_images([image])[0], image.shape[:2]).numpy()


async def answer_agreement(client: httpx.AsyncClient, spec: ServerSpec, base: str, photo: Photo,
                           expected: np.ndarray) -> float:
    """Fraction of pixels where a server's answer for ``photo`` equals the in-process label map."""
    r = await client.post(base + "/parse", params=PARSE_PARAMS, files={"image": (photo.name, photo.data,
                                                                                 photo.content_type)})
    if r.status_code != 200:
        raise RuntimeError(f"{spec.name} answered {r.status_code} to a first request: {r.text[:500]}")
    labels = np.asarray(Image.open(io.BytesIO(r.content)))
    return float((labels == expected).mean()) if labels.shape == expected.shape else 0.0


async def batch_reading(spec: ServerSpec, client: httpx.AsyncClient, base: str) -> tuple[float, float]:
    """``(requests, forward passes)`` so far: the service's ``/metrics``, LitServe's batch log; plain: none."""
    if spec.name.startswith("ours"):
        return batch_totals((await client.get(base + "/metrics")).text)
    if spec.batch_log and spec.batch_log.exists():
        sizes = [int(line) for line in spec.batch_log.read_text().split()]
        return float(sum(sizes)), float(len(sizes))
    return 0.0, 0.0


async def measure(specs: list[ServerSpec], parser: FaceParser, photos: list[Photo], args: argparse.Namespace,
                  log_dir: Path) -> tuple[list[LevelStats], list[dict], dict[str, float]]:
    """Rounds of: the in-process forward pass, then each server in turn at each concurrency.

    A server runs only during its turn (started, warmed up, measured, stopped), so that no idle
    server (LitServe's polls) takes CPU from another's measurement.
    """
    expected = expected_labels(parser, photos[0])
    rounds: dict[tuple[str, int], list[RoundResult]] = defaultdict(list)
    batched: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])  # requests, forward passes
    forwards, agreement = [], {}
    neighbours = (False, True) if args.neighbour else (False,)  # each level quiet, then next to the neighbour
    limits = httpx.Limits(max_connections=max(args.concurrency), max_keepalive_connections=max(args.concurrency))
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for index in range(args.rounds):
            forwards.append(forward_reference(parser, photos, args.batches, args.forward_repeats))
            print(f"round {index + 1}: in-process " + ", ".join(
                f"batch {b} {r['img_per_s']:.1f} img/s" for b, r in forwards[-1].items()), flush=True)
            for spec in specs:
                with running(spec, log_dir / f"{spec.name}.log") as server:
                    base = server.base_url
                    share = await answer_agreement(client, spec, base, photos[0], expected)
                    agreement[spec.name] = min(share, agreement.get(spec.name, 1.0))
                    await run_round(client, base + "/parse", photos, 4, 16)  # warm-up
                    for mode in args.faces if spec.name.startswith("ours") else ["whole"]:
                        params = {**PARSE_PARAMS, "faces": mode}
                        name = spec.name if mode == "whole" else f"{spec.name}:{mode}"
                        for concurrency, busy in product(args.concurrency, neighbours):
                            key = (name + ("+busy" if busy else ""), concurrency)
                            with busy_neighbour(args.neighbour) if busy else nullcontext() as nice:
                                if busy:
                                    print(f"busy neighbour: {args.neighbour} spinning processes at nice {nice}")
                                before = await batch_reading(spec, client, base)
                                result = await run_round(client, base + "/parse", photos, concurrency,
                                                         args.requests, params)
                                after = await batch_reading(spec, client, base)
                            rounds[key].append(result)
                            batched[key] = [total + a - b
                                            for total, a, b in zip(batched[key], after, before, strict=True)]
                            rate = len(result.latencies_s) / result.wall_s
                            print(f"round {index + 1}: {key[0]} c={concurrency} {rate:.1f}"
                                  f" img/s, {result.errors} errors", flush=True)
    stats = []
    for (name, concurrency), results in rounds.items():
        requests, passes = batched[(name, concurrency)]
        mean_batch = 1.0 if name == "plain" else (requests / passes if passes else None)
        stats.append(summarize(name, concurrency, results, mean_batch))
    return stats, forwards, agreement


HEADER = (f"{'server':<15} {'conc':>4} {'img/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'batch':>6} {'client cpu ms/req':>17}")


def format_row(s: LevelStats) -> str:
    batch = f"{s.mean_batch:6.2f}" if s.mean_batch is not None else f"{'-':>6}"
    return (f"{s.server:<15} {s.concurrency:>4} {s.img_per_s:7.1f} {s.p50_ms:8.1f} {s.p95_ms:8.1f} {s.p99_ms:8.1f} "
            f"{s.errors:>6} {batch} {s.client_cpu_ms:17.1f}")


def verdict(forward: dict, stats: list[LevelStats], low: int, high: int) -> dict:
    """The issue's targets, from ``ours`` at concurrency ``low`` (latency) and ``high`` (throughput)."""
    by_key = {(s.server, s.concurrency): s for s in stats}
    best_batch = max(forward, key=lambda b: forward[b]["img_per_s"])
    out: dict = {"best_batch": best_batch}
    ours_high, ours_low = by_key.get(("ours", high)), by_key.get(("ours", low))
    if ours_high:
        ratio = ours_high.img_per_s / forward[best_batch]["img_per_s"]
        out["throughput_ratio"] = {"value": ratio, "target": ">= 0.75", "met": ratio >= 0.75}
        for name in ("plain", "litserve"):
            other = by_key.get((name, high))
            if other:
                out[f"vs_{name}"] = {"img_per_s": ours_high.img_per_s >= other.img_per_s,
                                     "p99_lower": ours_high.p99_ms < other.p99_ms}
    if ours_low and 1 in forward:
        extra = ours_low.p50_ms - forward[1]["ms_per_image"]
        out["latency_overhead_ms"] = {"value": extra, "target": "<= 30", "met": extra <= 30}
    auto_high, auto_low = by_key.get(("ours:auto", high)), by_key.get(("ours:auto", low))
    if auto_high and ours_high:
        ratio = auto_high.img_per_s / ours_high.img_per_s
        out["auto_throughput_ratio"] = {"value": ratio, "target": ">= 0.6", "met": ratio >= 0.6}
    if auto_low and ours_low:
        extra = auto_low.p50_ms - ours_low.p50_ms
        out["auto_latency_extra_ms"] = {"value": extra, "target": "<= 40", "met": extra <= 40}
    for mode in ("ours", "ours:auto"):
        quiet, busy = by_key.get((mode, low)), by_key.get((mode + "+busy", low))
        if quiet and busy:
            ratio = busy.p50_ms / quiet.p50_ms
            out[f"{mode.replace('ours', 'busy').replace(':', '_')}_p50_ratio"] = {
                "value": ratio, "target": "<= 2.5", "met": ratio <= 2.5}
    return out


# verdict key -> what it compares, how its value prints, and the unit after the target
VERDICT_LINES = {
    "throughput_ratio": ("ours c={high} / in-process batch {best}", "{:.2f}", ""),
    "latency_overhead_ms": ("ours c={low} p50 - batch-1 forward", "{:+.1f} ms", " ms"),
    "auto_throughput_ratio": ("faces=auto / faces=whole at c={high}", "{:.2f}", ""),
    "auto_latency_extra_ms": ("faces=auto p50 - faces=whole p50 at c={low}", "{:+.1f} ms", " ms"),
    "busy_p50_ratio": ("faces=whole p50 next to the busy neighbour / quiet at c={low}", "{:.2f}x", "x"),
    "busy_auto_p50_ratio": ("faces=auto p50 next to the busy neighbour / quiet at c={low}", "{:.2f}x", "x"),
}


def format_verdict(v: dict, low: int, high: int) -> str:
    lines = []
    for key, (what, value_format, unit) in VERDICT_LINES.items():
        if key in v:
            t = v[key]
            label = what.format(low=low, high=high, best=v["best_batch"])
            lines.append(f"{label}: {value_format.format(t['value'])} (target {t['target']}{unit}: "
                         f"{'met' if t['met'] else 'NOT met'})")
    for name in ("plain", "litserve"):
        if f"vs_{name}" in v:
            t = v[f"vs_{name}"]
            lines.append(f"ours c={high} vs {name}: throughput >= {'yes' if t['img_per_s'] else 'NO'}, "
                         f"p99 lower {'yes' if t['p99_lower'] else 'NO'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Settings.model_fields
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/face-parser")
    ap.add_argument("--images", default=None, help="folder of face photos (default: faces drawn by the test helper)")
    ap.add_argument("--num-images", type=int, default=16)
    ap.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--processes", type=int, nargs="+", default=[1],
                    help="the service's FACEPARSE_PROCESSES values to measure, each a server of its own (ours-pN)")
    ap.add_argument("--faces", nargs="+", default=["whole"], choices=("whole", "auto"),
                    help="the service's faces modes to measure (the baselines always parse whole)")
    ap.add_argument("--requests", type=int, default=96, help="requests per round at each concurrency")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (each visits every server at every concurrency)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="in-process forward batch sizes")
    ap.add_argument("--forward-repeats", type=int, default=8, help="timed forward passes per batch size and round")
    ap.add_argument("--max-batch-size", type=int, default=defaults["max_batch_size"].default,
                    help="for the service and LitServe (default: the service's default)")
    ap.add_argument("--max-batch-delay-ms", type=float, default=defaults["max_batch_delay_ms"].default,
                    help="the service's max_batch_delay_ms (default: the service's default)")
    ap.add_argument("--litserve-batch-timeout-ms", type=float, default=5.0,
                    help="LitServe's batch_timeout (not 0: LitServe then polls its queue in a busy loop)")
    ap.add_argument("--service-env", nargs="*", default=[], metavar="NAME=VALUE",
                    help="more environment for the service, e.g. FACEPARSE_WORKER_THREADS=4")
    ap.add_argument("--neighbour", type=int, default=0, metavar="CORES",
                    help="also measure each level next to processes keeping this many cores busy (rows +busy)")
    ap.add_argument("--log-dir", default=None, help="server logs (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if any("=" not in kv for kv in args.service_env):
        ap.error("--service-env takes NAME=VALUE pairs, e.g. FACEPARSE_MAX_QUEUE_SIZE=128")
    return args


def server_specs(name: str, args: argparse.Namespace, log_dir: Path, service_env: dict[str, str]) -> list[ServerSpec]:
    """``name``'s server; the service once per ``--processes`` value (``ours``, ``ours-p2``, ...)."""
    spec = partial(server_spec, name, args.model, args.max_batch_size, args.max_batch_delay_ms, log_dir,
                   litserve_batch_timeout_ms=args.litserve_batch_timeout_ms)
    if name != "ours":
        return [spec(service_env)]
    specs = [spec({**service_env, "FACEPARSE_PROCESSES": str(n)}) for n in args.processes]
    for n, each in zip(args.processes, specs, strict=True):
        each.name = "ours" if n == 1 else f"ours-p{n}"
    return specs


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    photos = load_photos(args.images, args.num_images)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="service_load_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    service_env = dict(kv.split("=", 1) for kv in args.service_env)
    specs = [spec for name in args.servers for spec in server_specs(name, args, log_dir, service_env)]
    for spec in specs:
        if spec.batch_log:
            spec.batch_log.unlink(missing_ok=True)
    parser = FaceParser.load(args.model)
    stats, forwards, agreement = asyncio.run(measure(specs, parser, photos, args, log_dir))

    forward = median_forward(forwards)
    print(f"\nin-process forward ({len(photos)} photos, {torch.get_num_threads()} threads, median of "
          f"{args.rounds} rounds): " + ", ".join(
              f"batch {b}: {r['ms_per_image']:.1f} ms/img, {r['img_per_s']:.1f} img/s" for b, r in forward.items()))
    print(HEADER)
    for s in stats:
        print(format_row(s))
    for name, share in agreement.items():
        if share < 0.999:
            print(f"warning: {name}'s answer equals the in-process label map on only {share:.2%} of the pixels")
    low, high = min(args.concurrency), max(args.concurrency)
    v = verdict(forward, stats, low, high)
    print(format_verdict(v, low, high))
    results = {
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                    "torch_threads": torch.get_num_threads(), "device": str(parser.device)},
        "config": {k: val for k, val in vars(args).items() if k != "json"},
        "photos": len(photos), "forward": forward, "forward_per_round": forwards,
        "servers": [asdict(s) for s in stats], "answer_agreement": agreement, "verdict": v,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
