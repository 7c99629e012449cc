"""Forward-pass speed of a model folder on this machine: ms per image at several batch sizes.

    python -m benchmarks.model_speed [--model models/face-parser] [--batches 1 8] [--repeats 15] [--dtype auto] [--flip]
        [--tta_sizes 320 448] [--input_sizes 384 352 --rounds 5]

Median of repeated runs after warm-up. The forward pass is timed on preprocessed input; the
preprocessing (stacking uint8 photos at the input size, copying them to the device and normalising them
there: ``FaceParser.pixel_values``) is timed on its own. With ``--tta_sizes`` the figure is all the passes of
``FaceParser.score_images`` on photos at the largest size (as the service queues them), each size's
preprocessing and the averaging of the log scores included.

``--input_sizes`` times the model at other input sizes than its own (what a smaller or larger
``preprocessor_config.json`` size costs), the sizes taking turns in each of ``--rounds`` rounds, so that a
machine's drift falls on all of them alike: each size's median over the rounds, and its time over the first
size's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

import numpy as np
import torch

from face_parser.modeling import FaceParser


def time_forward(parser: FaceParser, batch: int, repeats: int, pixel_values: torch.Tensor | None = None,
                 flip: bool = False, extra_sizes: Sequence[int] = ()) -> float:
    """Median seconds of one forward pass at ``batch`` on ``pixel_values`` ``(batch, 3, S, S)``;
    ``flip``: with the mirrored photos in the same pass (``FACEPARSE_FLIP``); ``extra_sizes``: the passes at
    these sizes too (``FACEPARSE_TTA_SIZES``), from photos at the largest size.

    Without ``pixel_values``, random photos go through the shared preprocessing, so that the pass sees the
    memory layout the service gives it (channels-last): on the CPU a plain contiguous tensor is a different,
    slower pass (v3 in bf16 at batch 8: 46 against 33 ms a photo).
    """
    one_pass: Callable[[], object]
    if extra_sizes:
        photos = random_photos(batch, parser.input_sizes(extra_sizes)[-1])
        one_pass = partial(parser.score_images, photos, flip, extra_sizes)
    else:
        if pixel_values is None:
            pixel_values = parser.pixel_values(random_photos(batch, parser.preprocess.size))
        one_pass = partial(parser.scores, pixel_values, flip)
    for _ in range(3):
        one_pass()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_photos(batch: int, size: int) -> list[np.ndarray]:
    """``batch`` random ``(size, size, 3)`` uint8 photos, the same on every call."""
    return list(np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8))


def time_preprocess(parser: FaceParser, batch: int, repeats: int) -> float:
    """Median seconds to turn ``batch`` uint8 photos at the input size into the model's input on its device."""
    photos = random_photos(batch, parser.preprocess.size)
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        parser.pixel_values(photos)
        if parser.device.type == "cuda":
            torch.cuda.synchronize(parser.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def at_input_size(parser: FaceParser, size: int) -> FaceParser:
    """The same model fed photos at ``size`` px instead of its own input size."""
    return replace(parser, preprocess=replace(parser.preprocess, size=size))


def time_sizes(parser: FaceParser, sizes: Sequence[int], batch: int, repeats: int, rounds: int,
               flip: bool = False, extra_sizes: Sequence[int] = ()) -> dict[int, float]:
    """Median seconds of a pass at each input size over ``rounds`` rounds, the sizes taking turns in each."""
    times: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(rounds):
        for size in sizes:
            times[size].append(time_forward(at_input_size(parser, size), batch, repeats, flip=flip,
                                            extra_sizes=extra_sizes))
    return {size: statistics.median(values) for size, values in times.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/face-parser")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                    help="what the forward passes compute in (the service's FACEPARSE_DTYPE)")
    ap.add_argument("--flip", action="store_true", help="mirrored photos in the same pass (FACEPARSE_FLIP)")
    ap.add_argument("--tta_sizes", type=int, nargs="*", default=[], metavar="PX",
                    help="passes at these input sizes too, log scores averaged (FACEPARSE_TTA_SIZES)")
    ap.add_argument("--input_sizes", type=int, nargs="*", default=[], metavar="PX",
                    help="time the model at these input sizes instead of its own, taking turns")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of turns with --input_sizes")
    args = ap.parse_args(argv)
    parser = FaceParser.load(args.model, device=args.device, dtype=args.dtype)
    sizes = args.input_sizes or [parser.preprocess.size]
    results = {"model": parser.version, "device": str(parser.device), "dtype": str(parser.dtype),
               "threads": torch.get_num_threads(), "flip": args.flip,
               "tta_sizes": args.tta_sizes, "ms_per_image": {}, "img_per_s": {},
               "preprocess_ms_per_image": {}, "by_input_size": {size: {} for size in sizes}}
    for batch in args.batches:
        by_size = time_sizes(parser, sizes, batch, args.repeats, args.rounds, args.flip, args.tta_sizes)
        seconds = by_size[sizes[0]]
        results["ms_per_image"][batch] = round(seconds / batch * 1000, 1)
        results["img_per_s"][batch] = round(batch / seconds, 1)
        prep = time_preprocess(at_input_size(parser, sizes[0]), batch, args.repeats) / batch * 1000
        results["preprocess_ms_per_image"][batch] = round(prep, 2)
        print(f"batch {batch:3d}: {seconds / batch * 1000:7.1f} ms/image  {batch / seconds:7.1f} img/s"
              f"  (preprocess {prep:.2f} ms/image)")
        for size, other in by_size.items():
            results["by_input_size"][size][batch] = {"ms_per_image": round(other / batch * 1000, 1),
                                                     "against_first": round(other / seconds, 3)}
            if len(sizes) > 1:
                print(f"  at {size} px: {other / batch * 1000:7.1f} ms/image, {other / seconds:.3f}x {sizes[0]} px")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
