"""Live try-on benchmark: simulated viewers streaming to WS /recolor/live of a real server on loopback.

    python -m benchmarks.live [--viewers 1 4 8] [--seconds 30] [--fps 15] [--size 480] [--json out.json]

Each viewer sends ``size`` x ``size`` JPEG frames of the astronaut portrait (scikit-image, public
domain), moved and zoomed frame by frame, at ``fps`` on a fixed clock whatever the answers do (a
camera does not wait), and reads every answer. An answer's JPEG comment names the frame it answers,
so latency is exact: from sending that frame to receiving its answer. Frames never answered were
dropped by the service (it keeps only the newest waiting frame). Per viewer count: answered frames
per second per viewer, p50 / p95 latency over all viewers' answers, dropped frames per viewer, and
the mean batch size (frames per forward pass, from the server's ``/metrics``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import websockets
from PIL import Image

from benchmarks.servers import running, service_spec
from benchmarks.service_load import batch_totals
from service.settings import DEFAULT_MODEL_DIR

SETTINGS = {"lip_color": "#c0103a", "lip_intensity": 0.8, "lip_finish": "satin", "hair_color": "#8a3b12"}


def astronaut_frames(count: int, size: int = 480, step_px: float = 4.0, zoom: float = 0.1) -> list[np.ndarray]:
    """``count`` ``(size, size, 3)`` uint8 frames of the astronaut, panning ``step_px`` a frame and zooming in and
    out by ``zoom`` around her face: a face that moves like one in front of a webcam."""
    from skimage import data

    photo = data.astronaut()
    centre = np.array([230.0, 130.0])  # the face, in the 512 x 512 photo
    frames = []
    for index in range(count):
        phase = (index * step_px) % 80
        shift = phase if phase <= 40 else 80 - phase  # back and forth over 40 px
        scale = (1.0 + zoom * (0.5 - 0.5 * np.cos(2 * np.pi * index / 60))) * size / 512
        offset = centre * size / 512 - scale * centre - np.array([shift - 20, 0.0])
        matrix = np.array([[scale, 0, offset[0]], [0, scale, offset[1]]])
        frames.append(cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE))
    return frames


def jpeg_bytes(image_hwc: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image_hwc).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def answered_index(body: bytes) -> int:
    """The frame an answer answers, from its JPEG comment ``frame=<n>``."""
    return int(Image.open(io.BytesIO(body)).info["comment"].decode().removeprefix("frame="))


@dataclass
class ViewerResult:
    sent: int
    answered: int
    latencies_s: list[float]
    errors: int


async def viewer(url: str, frames: list[bytes], fps: float, seconds: float) -> ViewerResult:
    """Stream ``frames`` (cycled) at ``fps`` for ``seconds``; collect the answers until the last one is in."""
    sent_at: dict[int, float] = {}
    latencies, errors = [], 0
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps(SETTINGS))
        json.loads(await ws.recv())  # the settings acknowledgement
        total = int(seconds * fps)

        async def send_all() -> None:
            start = time.perf_counter()
            for index in range(total):
                await asyncio.sleep(max(0.0, start + index / fps - time.perf_counter()))
                sent_at[index] = time.perf_counter()
                await ws.send(frames[index % len(frames)])

        sender = asyncio.create_task(send_all())
        last = -1
        while last < total - 1:
            try:
                message = await asyncio.wait_for(ws.recv(), 5.0)
            except TimeoutError:
                break  # the last frames were dropped or the stream stalled
            if isinstance(message, bytes):
                last = answered_index(message)
                latencies.append(time.perf_counter() - sent_at[last])
            elif json.loads(message).get("type") == "error":
                errors += 1
        await sender
    return ViewerResult(total, len(latencies), latencies, errors)


@dataclass
class LevelStats:
    viewers: int
    fps_per_viewer: float
    p50_ms: float
    p95_ms: float
    dropped_per_viewer: float
    errors: int
    mean_batch: float | None


async def run_level(base: str, frames: list[bytes], viewers: int, fps: float, seconds: float) -> LevelStats:
    url = base.replace("http://", "ws://") + "/recolor/live"
    async with httpx.AsyncClient(timeout=30) as client:
        before = batch_totals((await client.get(base + "/metrics")).text)
        results = await asyncio.gather(*(viewer(url, frames, fps, seconds) for _ in range(viewers)))
        after = batch_totals((await client.get(base + "/metrics")).text)
    items, passes = after[0] - before[0], after[1] - before[1]
    latencies = sorted(x for r in results for x in r.latencies_s)
    return LevelStats(
        viewers=viewers,
        fps_per_viewer=statistics.mean(r.answered for r in results) / seconds,
        p50_ms=1000 * float(np.percentile(latencies, 50)) if latencies else float("nan"),
        p95_ms=1000 * float(np.percentile(latencies, 95)) if latencies else float("nan"),
        dropped_per_viewer=statistics.mean(r.sent - r.answered for r in results),
        errors=sum(r.errors for r in results),
        mean_batch=items / passes if passes else None,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--viewers", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--seconds", type=float, default=30.0, help="streaming time per viewer count (shorter for dev)")
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--size", type=int, default=480)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--torch_threads", type=int, default=0, help="FACEPARSE_TORCH_THREADS (0: all cores)")
    ap.add_argument("--processes", type=int, default=1, help="FACEPARSE_PROCESSES (each viewer stays with one)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    frames = [jpeg_bytes(f) for f in astronaut_frames(60, args.size)]
    spec = service_spec(args.model, device=args.device, log_level="warning", torch_threads=args.torch_threads,
                        live_max_streams=max(args.viewers) + 1, processes=args.processes)
    stats = []
    with tempfile.TemporaryDirectory() as tmp, running(spec, Path(tmp) / "server.log") as server:
        asyncio.run(run_level(server.base_url, frames, 1, args.fps, 2.0))  # warm-up
        for count in args.viewers:
            stats.append(asyncio.run(run_level(server.base_url, frames, count, args.fps, args.seconds)))
            s = stats[-1]
            batch = f"{s.mean_batch:.2f}" if s.mean_batch else "-"
            print(f"{s.viewers} viewers: {s.fps_per_viewer:.1f} fps each, p50 {s.p50_ms:.0f} ms, "
                  f"p95 {s.p95_ms:.0f} ms, {s.dropped_per_viewer:.0f} dropped each, {s.errors} errors, "
                  f"mean batch {batch}", flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in stats], indent=2))


if __name__ == "__main__":
    main()
