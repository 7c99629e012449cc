"""Soak: the real service under steady load for minutes; throughput, errors, latency and memory over time.

    python -m benchmarks.soak --minutes 5 [--concurrency 4] [--interval 30] [--model models/face-parser]
                              [--json reports/reliability/soak.json] [--plot docs/figures/soak.png]

Starts ``python -m service`` on a free loopback port (default settings, the given model), then
``--concurrency`` client threads send a fixed round-robin mix back to back: ``/parse`` as png, rle
and colour overlay, and ``/recolor`` (lips + hair, JPEG), with real face photos at two sizes.
Every ``--interval`` seconds one line: requests, req/s, errors by status, p50/p99 latency, the server's
resident memory (VmRSS). At the end a summary: totals, RSS over the first vs the last minute, and the
slope of a line fitted to RSS after the first minute (flat memory: a slope near 0 MB/min).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.servers import Server, running, service_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux ``/proc``; psutil elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    import psutil

    return psutil.Process(pid).memory_info().rss / MB


def thread_count(pid: int) -> int | None:
    """Threads of a process (Linux ``/proc``; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    except (FileNotFoundError, StopIteration):
        return None


def metric_value(base_url: str, name: str, **labels: str) -> float | None:
    """One sample of the service's ``/metrics`` (None when absent)."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def server_errors_logged(log_path: Path) -> int:
    """Tracebacks and ERROR lines the service wrote."""
    text = log_path.read_text(errors="replace")
    return text.count("Traceback (most recent call last)") + text.count(" ERROR ")


# --- what the clients send --------------------------------------------------------------------------------

def face_photos() -> dict[str, bytes]:
    """Real face photos (scikit-image's astronaut) as a 512 px JPEG and a 256 px PNG; drawn faces without it."""
    try:
        from skimage.data import astronaut

        photo = Image.fromarray(astronaut())
    except ImportError:
        from tests.conftest import draw_face

        photo = Image.fromarray(draw_face(512, seed=0)[0])
    big, small = io.BytesIO(), io.BytesIO()
    photo.save(big, format="JPEG", quality=90)
    photo.resize((256, 256), Image.Resampling.BILINEAR).save(small, format="PNG")
    return {"512.jpg": big.getvalue(), "256.png": small.getvalue()}


def request_mix(photos: dict[str, bytes]) -> list[tuple[str, Callable[[httpx.Client], httpx.Response]]]:
    """``(label, send)`` pairs that a client thread cycles through."""
    def parse(name: str, **params) -> Callable[[httpx.Client], httpx.Response]:
        return lambda c: c.post("/parse", params=params, files={"image": (name, photos[name])})

    def recolor(name: str) -> Callable[[httpx.Client], httpx.Response]:
        form = {"lip_color": "#b0204a", "hair_color": "#c0782f", "format": "jpeg"}
        return lambda c: c.post("/recolor", data=form, files={"image": (name, photos[name])})

    return [("parse png 512", parse("512.jpg", format="png")), ("parse rle 256", parse("256.png", format="rle")),
            ("parse color 512", parse("512.jpg", format="color", overlay="true")),
            ("recolor 512", recolor("512.jpg")), ("parse png 256", parse("256.png", format="png")),
            ("recolor 256", recolor("256.png"))]


# --- the run ------------------------------------------------------------------------------------------------

@dataclass
class Done:
    at_s: float  # completion, seconds since the load started
    label: str
    status: str  # HTTP status, or the client-side exception's name
    latency_s: float


def client_loop(base_url: str, mix, start: float, stop: threading.Event, done: list[Done], offset: int) -> None:
    with httpx.Client(base_url=base_url, timeout=120) as client:
        i = offset
        while not stop.is_set():
            label, send = mix[i % len(mix)]
            i += 1
            t0 = time.perf_counter()
            try:
                status = str(send(client).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            t1 = time.perf_counter()
            done.append(Done(t1 - start, label, status, t1 - t0))  # list.append is atomic


def sample_rss(pid: int, start: float, stop: threading.Event, samples: list[tuple[float, float]],
               every_s: float = 1.0) -> None:
    while not stop.wait(every_s):
        samples.append((time.perf_counter() - start, rss_mb(pid)))


def window_stats(rows: list[Done], seconds: float) -> dict:
    latencies = np.array([d.latency_s for d in rows]) * 1000
    errors = Counter(d.status for d in rows if d.status != "200")
    return {"requests": len(rows), "req_per_s": round(len(rows) / seconds, 2) if seconds > 0 else None,
            "errors": dict(errors),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(rows) else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 1) if len(rows) else None}


def memory_summary(samples: list[tuple[float, float]], rss_start: float, duration_s: float) -> dict:
    """RSS over the first vs the last window (a minute, or a quarter of shorter runs) and the slope of a
    least-squares line over everything after the first window (warm-up growth excluded)."""
    window = min(60.0, duration_s / 4)
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    first, last, steady = rss[t <= window], rss[t >= duration_s - window], t > window
    slope = np.polyfit(t[steady] / 60, rss[steady], 1)[0] if steady.sum() >= 2 else float("nan")
    return {"window_s": round(window, 1), "before_load_mb": round(rss_start, 1),
            "first_window_mb": round(float(first.mean()), 1), "last_window_mb": round(float(last.mean()), 1),
            "max_mb": round(float(rss.max()), 1), "slope_mb_per_min": round(float(slope), 2)}


def plot(result: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    t_min = np.array([s[0] for s in result["rss_samples"]]) / 60
    rss = np.array([s[1] for s in result["rss_samples"]])
    done_at = np.array(result["completions_s"])
    bin_s = 10.0
    edges = np.arange(0, result["duration_s"] // bin_s + 1) * bin_s  # whole bins only
    counts, _ = np.histogram(done_at, bins=edges)
    fig, (ax_rss, ax_tp) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    ax_rss.plot(t_min, rss, color="tab:blue", lw=1.2)
    ax_rss.set_ylabel("server RSS (MiB)")
    mem = result["memory"]
    ax_rss.set_title(f"Soak: {result['requests']} requests in {result['duration_s'] / 60:.1f} min, "
                     f"concurrency {result['concurrency']}, {result['errors_total']} errors; "
                     f"RSS slope {mem['slope_mb_per_min']:+.1f} MiB/min after {mem['window_s']:.0f} s", fontsize=10)
    ax_rss.set_ylim(0, rss.max() * 1.15)
    ax_rss.grid(alpha=0.3)
    ax_tp.stairs(counts / bin_s, edges / 60, baseline=None, color="tab:green")
    ax_tp.set_ylabel(f"requests/s ({bin_s:.0f} s bins)")
    ax_tp.set_xlabel("minutes")
    ax_tp.set_ylim(0, max(counts.max() / bin_s * 1.2, 1))
    ax_tp.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def soak(service: Server, minutes: float, concurrency: int, interval_s: float) -> dict:
    mix = request_mix(face_photos())
    with httpx.Client(base_url=service.base_url, timeout=120) as warm:
        for label, send in mix:  # every code path once before the clock starts
            if (status := send(warm).status_code) != 200:
                raise RuntimeError(f"warm-up request {label!r} answered {status}")
        model = warm.get("/v1/model").json()
    time.sleep(1.0)
    rss_start = rss_mb(service.pid)
    duration_s = minutes * 60
    done: list[Done] = []
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(service.base_url, mix, start, stop, done, i), daemon=True)
               for i in range(concurrency)]
    threads.append(threading.Thread(target=sample_rss, args=(service.pid, start, stop, samples), daemon=True))
    for th in threads:
        th.start()
    print(f"{'t (s)':>6} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8}  errors")
    intervals, seen = [], 0
    while (elapsed := time.perf_counter() - start) < duration_s:
        time.sleep(min(interval_s, duration_s - elapsed))
        now = time.perf_counter() - start
        rows = done[seen:]  # one read: clients go on appending meanwhile
        seen += len(rows)
        row = {"t_s": round(now, 1), **window_stats(rows, now - (intervals[-1]["t_s"] if intervals else 0.0)),
               "rss_mb": round(rss_mb(service.pid), 1)}
        intervals.append(row)
        print(f"{row['t_s']:6.0f} {row['requests']:9d} {row['req_per_s']:7.2f} {row['p50_ms'] or 0:8.0f} "
              f"{row['p99_ms'] or 0:8.0f} {row['rss_mb']:8.1f}  {row['errors'] or '-'}")
    stop.set()
    for th in threads:
        th.join(timeout=130)
    duration_s = time.perf_counter() - start  # the last requests finished after the nominal end
    overall = window_stats(done, duration_s)
    return {
        "model": model["version"], "device": model.get("device"), "batching": model.get("batching"),
        "concurrency": concurrency, "mix": [label for label, _ in mix], "duration_s": round(duration_s, 1),
        "requests": overall["requests"], "req_per_s": overall["req_per_s"], "p50_ms": overall["p50_ms"],
        "p99_ms": overall["p99_ms"], "errors": overall["errors"], "errors_total": sum(overall["errors"].values()),
        "by_request": {label: window_stats([d for d in done if d.label == label], duration_s)
                       for label, _ in mix},
        "memory": memory_summary(samples, rss_start, duration_s), "intervals": intervals,
        "rss_samples": [(round(t, 1), round(r, 1)) for t, r in samples],
        "completions_s": [round(d.at_s, 2) for d in done],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between progress lines")
    ap.add_argument("--model", default=str(REPO_ROOT / "models" / "face-parser"))
    ap.add_argument("--json", type=Path, default=REPO_ROOT / "reports" / "reliability" / "soak.json")
    ap.add_argument("--plot", type=Path, default=None, help="PNG of RSS and throughput over time")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "service.log"
        with running(service_spec(args.model), log_path) as service:
            result = soak(service, args.minutes, args.concurrency, args.interval)
        result["server_errors_logged"] = server_errors_logged(log_path)
    mem = result["memory"]
    print(f"\n{result['requests']} requests in {result['duration_s']:.0f} s ({result['req_per_s']} req/s, "
          f"concurrency {result['concurrency']}, model {result['model']} on {result['device']}); "
          f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; errors {result['errors_total']} "
          f"{result['errors'] or ''}; server tracebacks/ERROR lines {result['server_errors_logged']}")
    print(f"RSS: {mem['before_load_mb']} MiB before load, {mem['first_window_mb']} over the first "
          f"{mem['window_s']:.0f} s, {mem['last_window_mb']} over the last {mem['window_s']:.0f} s, max "
          f"{mem['max_mb']}; slope after the first window {mem['slope_mb_per_min']:+.2f} MiB/min")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"json: {args.json}")
    if args.plot:
        plot(result, args.plot)
    return result


if __name__ == "__main__":
    main()
