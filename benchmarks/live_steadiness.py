"""Steadiness of the live stream's mattes: flicker on a still face, lag behind a moving one.

    python -m benchmarks.live_steadiness [--model models/face-parser] [--frames 40] [--noise 6]

Frames go through the live pipeline itself (:class:`service.live.LiveStream` with a real
:class:`service.inference.InferenceEngine` and its batcher, in-process); a recording smoother
keeps each frame's lip and hair mattes before and after the temporal smoothing.

- Flicker: the astronaut portrait (scikit-image, public domain) at 480 x 480, the same frame with
  fresh camera-like noise each time (Gaussian, ``--noise`` levels, then JPEG at quality 85). The
  figure is the mean absolute frame-to-frame change of each matte over the pixels where it is
  ever non-zero, without and with smoothing (target: smoothing at least halves it).
- Lag: the same portrait moving 10 px per frame to the right. The figure is how far the smoothed
  matte's centre (x) is behind the unsmoothed matte of the same frame, and behind where the
  first frame's matte has moved to (target <= 2 px).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from itertools import pairwise

import cv2
import numpy as np

from benchmarks.live import astronaut_frames, jpeg_bytes
from face_parser.modeling import FaceParser
from service.inference import InferenceEngine
from service.live import Frame, LiveOptions, LiveStream
from service.settings import DEFAULT_MODEL_DIR, Settings
from service.tracking import MatteSmoother

OPTIONS = LiveOptions(lip_color="#c0103a", hair_color="#8a3b12")
STEP_PX = 10


class RecordingSmoother(MatteSmoother):
    """The live smoother, keeping what went in and what came out."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[dict[str, np.ndarray]] = []
        self.smooth: list[dict[str, np.ndarray]] = []

    def __call__(self, mattes, motion):
        out = super().__call__(mattes, motion)
        self.raw.append(mattes)
        self.smooth.append(out)
        return out


async def run_stream(parser: FaceParser, settings: Settings, frames: list[np.ndarray]) -> RecordingSmoother:
    engine = InferenceEngine(parser, settings)
    engine.start()
    try:
        stream = LiveStream(engine, settings, OPTIONS)
        stream.smoother = recorder = RecordingSmoother()
        for index, frame in enumerate(frames):
            await stream.process(Frame(jpeg_bytes(frame), index, time.perf_counter()))
    finally:
        await engine.stop()
    return recorder


def flicker(mattes: list[np.ndarray], skip: int = 5) -> float:
    """Mean |m_t - m_(t-1)| over the pixels where any frame's matte is non-zero (from frame ``skip`` on)."""
    band = np.max(mattes, axis=0) > 0
    return float(np.mean([np.abs(a - b)[band].mean() for a, b in pairwise(mattes[skip:])]))


def centre_x(matte: np.ndarray) -> float:
    return float((matte.sum(0) * np.arange(matte.shape[1])).sum() / max(matte.sum(), 1e-6))


def noisy_still(count: int, noise: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    still = astronaut_frames(1)[0].astype(np.float32)
    frames = []
    for _ in range(count):
        noisy = np.clip(still + rng.normal(0, noise, still.shape), 0, 255).astype(np.uint8)
        jpeg = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
        frames.append(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED))
    return frames


def moving(count: int) -> list[np.ndarray]:
    still = astronaut_frames(1)[0]
    start = -STEP_PX * (count // 2)
    return [cv2.warpAffine(still, np.float32([[1, 0, start + STEP_PX * t], [0, 1, 0]]), still.shape[1::-1],
                           borderMode=cv2.BORDER_REPLICATE) for t in range(count)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--noise", type=float, default=6.0, help="camera noise, standard deviation in levels")
    args = ap.parse_args()
    settings = Settings(model_dir=args.model, device="cpu")
    parser = FaceParser.load(args.model, device="cpu")
    report: dict = {}
    still = asyncio.run(run_stream(parser, settings, noisy_still(args.frames, args.noise)))
    for part in ("lips", "hair"):
        raw, smooth = flicker([m[part] for m in still.raw]), flicker([m[part] for m in still.smooth])
        report[f"flicker_{part}"] = {"raw": raw, "smoothed": smooth, "ratio": smooth / raw}
        print(f"still face, {part}: frame-to-frame change {raw:.4f} raw, {smooth:.4f} smoothed ({smooth / raw:.2f}x)")
    frames = moving(min(args.frames, 20))
    run = asyncio.run(run_stream(parser, settings, frames))
    for part in ("lips", "hair"):
        first = centre_x(run.raw[0][part])
        behind_raw = [centre_x(r[part]) - centre_x(s[part]) for r, s in zip(run.raw[2:], run.smooth[2:], strict=True)]
        behind_true = [first + STEP_PX * t - centre_x(s[part]) for t, s in enumerate(run.smooth) if t >= 2]
        report[f"lag_{part}"] = {"mean_px": float(np.mean(behind_raw)), "max_abs_px": float(np.max(np.abs(behind_raw))),
                                 "vs_moved_first_mean_px": float(np.mean(behind_true))}
        print(f"moving {STEP_PX} px/frame, {part}: smoothed matte behind the raw one by {np.mean(behind_raw):+.2f} px "
              f"(max |{np.max(np.abs(behind_raw)):.2f}| px); behind the first frame's matte moved along: "
              f"{np.mean(behind_true):+.2f} px")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
