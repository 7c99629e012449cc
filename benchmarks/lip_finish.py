"""Lip finishes on held-out faces: how the lips' highlights change, and that nothing else does.

    python -m benchmarks.lip_finish --data_dir ../shared/data/celebamask-mini [--count 50] [--color '#b0204a']

The photos are the pairs the shipped model never trained on (``split_indices(n, 100, seed 0)``,
as training and ``model_training.evaluate`` split them). Each is parsed as ``POST /recolor``
with ``faces=whole`` does it (:func:`benchmarks.recolor_quality.parse_photo`) and its lips are
recoloured at ``--intensity`` with each finish. Figures (medians over photos):

- contrast: the mean CIE L of the brightest 5% of the true lip pixels (the ground-truth mask,
  eroded by 2 px) minus their median L, for the original photo and after natural, matte, satin
  and gloss (matte must lower it, gloss raise it);
- unchanged: the share of pixels where the lip matte is 0 that are bit for bit the photo's.

The labelled photos are read at run time and never written anywhere.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmarks.recolor_quality import parse_photo
from face_parser.modeling import FaceParser
from model_training.data import split_indices
from service.recolor import LIP_FINISHES, LIP_PARTS, ColorRequest, parse_hex_color, recolor_with_mattes
from service.settings import DEFAULT_MODEL_DIR


def highlight_contrast(rgb_hwc: np.ndarray, where_hw: np.ndarray) -> float:
    """Mean CIE L (0..100) of the brightest 5% of ``where_hw`` minus its median."""
    lightness = cv2.cvtColor(rgb_hwc.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0][where_hw]
    return float(lightness[lightness >= np.percentile(lightness, 95)].mean() - np.median(lightness))


def held_out(data_dir: Path, count: int) -> list[Path]:
    images = sorted((data_dir / "images").glob("*.jpg"))
    if not images:
        raise SystemExit(f"no images/*.jpg under {data_dir}: pass --data_dir <folder with images/ and masks/>")
    return [images[i] for i in split_indices(len(images), 100, 0)[1]][:count]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", type=Path, required=True)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--color", default="#b0204a")
    ap.add_argument("--intensity", type=float, default=0.8)
    args = ap.parse_args()
    parser = FaceParser.load(args.model, device="cpu")
    lip_ids = parser.labels.ids_of(LIP_PARTS)
    contrast: dict[str, list[float]] = {name: [] for name in ("original", *LIP_FINISHES)}
    unchanged: list[float] = []
    for path in held_out(args.data_dir, args.count):
        photo = np.asarray(Image.open(path).convert("RGB"))
        truth = np.asarray(Image.open(args.data_dir / "masks" / f"{path.stem}.png"))
        lips = cv2.erode(np.isin(truth, lip_ids).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if lips.sum() < 50:
            continue
        _, mattes = parse_photo(parser, photo)
        contrast["original"].append(highlight_contrast(photo, lips))
        outside = mattes["lips"] <= 0
        for finish in LIP_FINISHES:
            color = ColorRequest(parse_hex_color(args.color), args.intensity, finish)
            result = recolor_with_mattes(photo, mattes, color, None)
            contrast[finish].append(highlight_contrast(result, lips))
            unchanged.append(float((result[outside] == photo[outside]).all(axis=-1).mean()))
    report = {name: statistics.median(values) for name, values in contrast.items()}
    report["photos"] = len(contrast["original"])
    report["unchanged_outside_matte_min"] = min(unchanged)
    for name in ("original", *LIP_FINISHES):
        print(f"{name:9s} highlight contrast {report[name]:5.2f} L")
    print(f"{report['photos']} held-out photos; outside the lip matte unchanged: min {100 * min(unchanged):.3f} %")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
