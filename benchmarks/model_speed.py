"""Forward-pass speed of a model folder on this machine: ms per image at several batch sizes.

    python -m benchmarks.model_speed [--model models/face-parser] [--batches 1 8] [--repeats 15] [--dtype auto] [--flip]

Median of repeated runs after warm-up. The forward pass is timed on preprocessed input; the
preprocessing (stacking uint8 photos at the input size, copying them to the device and normalising them
there: ``FaceParser.pixel_values``) is timed on its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from face_parser.modeling import FaceParser


def time_forward(parser: FaceParser, batch: int, repeats: int, pixel_values: torch.Tensor | None = None,
                 flip: bool = False) -> float:
    """Median seconds of one forward pass at ``batch`` on ``pixel_values`` ``(batch, 3, S, S)``;
    ``flip``: with the mirrored photos in the same pass (``FACEPARSE_FLIP``).

    Without ``pixel_values``, random photos go through the shared preprocessing, so that the pass sees the
    memory layout the service gives it (channels-last): on the CPU a plain contiguous tensor is a different,
    slower pass (v3 in bf16 at batch 8: 46 against 33 ms a photo).
    """
    if pixel_values is None:
        size = parser.preprocess.size
        photos = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        pixel_values = parser.pixel_values(list(photos))
    for _ in range(3):
        parser.scores(pixel_values, flip)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        parser.scores(pixel_values, flip)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_preprocess(parser: FaceParser, batch: int, repeats: int) -> float:
    """Median seconds to turn ``batch`` uint8 photos at the input size into the model's input on its device."""
    size = parser.preprocess.size
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        parser.pixel_values(photos)
        if parser.device.type == "cuda":
            torch.cuda.synchronize(parser.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/face-parser")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                    help="what the forward passes compute in (the service's FACEPARSE_DTYPE)")
    ap.add_argument("--flip", action="store_true", help="mirrored photos in the same pass (FACEPARSE_FLIP)")
    args = ap.parse_args(argv)
    parser = FaceParser.load(args.model, device=args.device, dtype=args.dtype)
    results = {"model": parser.version, "device": str(parser.device), "dtype": str(parser.dtype),
               "threads": torch.get_num_threads(), "flip": args.flip, "ms_per_image": {}, "img_per_s": {},
               "preprocess_ms_per_image": {}}
    for batch in args.batches:
        seconds = time_forward(parser, batch, args.repeats, flip=args.flip)
        results["ms_per_image"][batch] = round(seconds / batch * 1000, 1)
        results["img_per_s"][batch] = round(batch / seconds, 1)
        prep = time_preprocess(parser, batch, args.repeats) / batch * 1000
        results["preprocess_ms_per_image"][batch] = round(prep, 2)
        print(f"batch {batch:3d}: {seconds / batch * 1000:7.1f} ms/image  {batch / seconds:7.1f} img/s"
              f"  (preprocess {prep:.2f} ms/image)")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
