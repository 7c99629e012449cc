"""Recolour quality on labelled face photos: what stays, where the hue goes, what detail survives.

    python -m benchmarks.recolor_quality --data_dir ../shared/data/celebamask-mini --count 50 \\
        [--model models/face-parser] [--dilate_px 5] [--out reports/recolor_quality.json]

Each photo (an aligned face) is parsed by the model as ``POST /recolor`` with ``faces=whole`` does it
(resize, one forward pass, ``part_probabilities`` of the service, ``part_mattes`` + ``recolor_with_mattes``
of ``service.recolor``)
and recoloured at intensity 1 with a few lip / hair colour combinations. Per photo and combination:

- ``unchanged``: outside the union of the ground-truth lip and hair masks, each dilated by
  ``--dilate_px`` pixels, the fraction of pixels whose largest channel difference to the input is
  at most 2 levels (target >= 99.9 %).
- ``unchanged_own``: the same outside the model's own lip and hair decision (probability > 0.5)
  dilated alike, same 99.9 % bar: the recolouring's own halo, without the parser's mistakes.
- ``parser_clean``: the share of the ``unchanged`` region that the model does not call lips or hair:
  the ceiling ``unchanged`` can reach with this parser (no target; for diagnosis).
- ``lip_hue_err`` / ``hair_hue_err``: circular distance in degrees between the target's hue and the
  mean hue of the result where the service's matte is >= 0.9 (HSV hue, circular mean weighted by
  saturation, so that near-grey pixels with an arbitrary hue count little; target <= 10).
- ``hair_detail``: energy (mean square) of the 3x3 Laplacian of CIE L inside the hair, after / before,
  over the pixels whose 3x3 neighbourhood all has hair matte >= 0.9 (target >= 0.85).

The labelled photos are read at run time and never written anywhere; the JSON holds only numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from face_parser.modeling import FaceParser
from face_parser.pipeline import FaceParsing
from service.faces import part_probabilities
from service.recolor import (
    HAIR_PARTS,
    LIP_PARTS,
    TEETH_PARTS,
    ColorRequest,
    parse_hex_color,
    part_mattes,
    recolor_with_mattes,
)

# (lips, hair): warm and cool lips, copper / blue / dark-to-light blonde hair.
COMBINATIONS = (("#b0204a", "#c0782f"), ("#d05a7a", "#3a5fcd"), ("#b0204a", "#e6c88c"))
TARGETS = {"unchanged": (">=", 0.999), "unchanged_own": (">=", 0.999), "parser_clean": (">=", 0.999),
           "lip_hue_err": ("<=", 10.0), "hair_hue_err": ("<=", 10.0),
           "hair_detail": (">=", 0.85)}
HIGH_MATTE = 0.9
MAX_LEVELS = 2


@dataclass
class Row:
    image: str
    lips: str
    hair: str
    unchanged: float
    unchanged_own: float
    parser_clean: float
    lip_hue_err: float | None
    hair_hue_err: float | None
    hair_detail: float | None


def model_scores(parser: FaceParser, photo_hwc: np.ndarray) -> torch.Tensor:
    """``(K, h, w)`` class scores of one photo, preprocessed as the service's engine does it."""
    return parser.score_images([photo_hwc])[0]


def parse_photo(parser: FaceParser, photo_hwc: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(part probabilities, refined lip and hair mattes)`` as the service computes them for ``photo_hwc``."""
    parsing = FaceParsing([model_scores(parser, photo_hwc)], faces=None)  # faces=whole: the photos are aligned faces
    parts = LIP_PARTS + TEETH_PARTS + HAIR_PARTS
    probs = part_probabilities(parsing, parser.labels, photo_hwc.shape[:2], parts, face_indices=None)
    return probs, part_mattes(photo_hwc, probs)


def hue_deg(rgb_hwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV hue in degrees and saturation in [0, 1] of a uint8 RGB array."""
    hsv = cv2.cvtColor(rgb_hwc.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    return hsv[..., 0], hsv[..., 1]


def hue_error(result_hwc: np.ndarray, where_hw: np.ndarray, target_rgb: tuple[int, int, int]) -> float | None:
    """Degrees between the saturation-weighted circular mean hue over ``where_hw`` and the target's hue."""
    if where_hw.sum() < 20:
        return None
    hue, sat = hue_deg(result_hwc)
    angles, weights = np.deg2rad(hue[where_hw]), sat[where_hw]
    mean = np.rad2deg(np.arctan2((weights * np.sin(angles)).sum(), (weights * np.cos(angles)).sum()))
    target = float(hue_deg(np.array([[target_rgb]], np.uint8))[0][0, 0])
    return float(abs((mean - target + 180) % 360 - 180))


def laplacian_energy(rgb_hwc: np.ndarray, where_hw: np.ndarray) -> float:
    lightness = cv2.cvtColor(rgb_hwc.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0]
    return float((cv2.Laplacian(lightness, cv2.CV_32F, ksize=3)[where_hw] ** 2).mean())


def dilate(mask_hw: np.ndarray, px: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask_hw.astype(np.uint8), kernel).astype(bool)


def outside_parts(lips_hw: np.ndarray, hair_hw: np.ndarray, px: int) -> np.ndarray:
    """Pixels outside the union of the lip and hair masks, each dilated by ``px``."""
    return ~(dilate(lips_hw, px) | dilate(hair_hw, px))


def measure(name: str, photo_hwc: np.ndarray, mattes: dict, lips_hex: str, hair_hex: str,
            outside_hw: np.ndarray, outside_own_hw: np.ndarray, parser_clean: float) -> Row:
    lips_rgb, hair_rgb = parse_hex_color(lips_hex), parse_hex_color(hair_hex)
    result = recolor_with_mattes(photo_hwc, mattes, ColorRequest(lips_rgb, 1.0), ColorRequest(hair_rgb, 1.0))
    diff = np.abs(result.astype(np.int16) - photo_hwc.astype(np.int16)).max(axis=-1)
    unchanged = float((diff[outside_hw] <= MAX_LEVELS).mean())
    unchanged_own = float((diff[outside_own_hw] <= MAX_LEVELS).mean())
    hair_core = cv2.erode((mattes["hair"] >= HIGH_MATTE).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    detail = None
    if hair_core.sum() >= 20:
        before = laplacian_energy(photo_hwc, hair_core)
        detail = laplacian_energy(result, hair_core) / before if before > 0 else None
    return Row(name, lips_hex, hair_hex, unchanged, unchanged_own, parser_clean,
               hue_error(result, mattes["lips"] >= HIGH_MATTE, lips_rgb),
               hue_error(result, mattes["hair"] >= HIGH_MATTE, hair_rgb), detail)


def load_pairs(data_dir: Path, count: int) -> list[tuple[str, Path, Path]]:
    images = sorted((data_dir / "images").glob("*.jpg"))[:count]
    if not images:
        raise SystemExit(f"no images/*.jpg under {data_dir}: pass --data_dir <folder with images/ and masks/>")
    return [(p.stem, p, data_dir / "masks" / f"{p.stem}.png") for p in images]


def summarise(rows: list[Row]) -> dict:
    """Median of each metric (over all photos and combinations) and whether it meets its target."""
    summary = {}
    for metric, (op, target) in TARGETS.items():
        values = [getattr(r, metric) for r in rows if getattr(r, metric) is not None]
        median = statistics.median(values) if values else None
        met = median is not None and (median >= target if op == ">=" else median <= target)
        passing = sum((v >= target if op == ">=" else v <= target) for v in values)
        summary[metric] = {"median": median, "target": f"{op} {target}", "met": met,
                           "rows_meeting_target": f"{passing}/{len(values)}"}
    return summary


def fmt(value: float | None, spec: str) -> str:
    return "   -  " if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", type=Path, required=True, help="folder with images/<id>.jpg and masks/<id>.png")
    ap.add_argument("--count", type=int, default=50, help="first N photos (sorted by name)")
    ap.add_argument("--model", default="models/face-parser")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dilate_px", type=int, default=5, help="dilation of the ground-truth lip and hair masks")
    ap.add_argument("--out", type=Path, default=Path("reports/recolor_quality.json"))
    args = ap.parse_args(argv)

    parser = FaceParser.load(args.model, device=args.device)
    lip_ids, hair_ids = parser.labels.ids_of(LIP_PARTS), parser.labels.ids_of(HAIR_PARTS)
    rows: list[Row] = []
    print(f"{'image':34s} {'lips':8s} {'hair':8s} {'unchanged%':>10s} {'own%':>7s} {'parser%':>7s} {'lip_hue':>7s}"
          f" {'hair_hue':>8s}"
          f" {'detail':>6s}")
    for name, image_path, mask_path in load_pairs(args.data_dir, args.count):
        photo = np.asarray(Image.open(image_path).convert("RGB"))
        truth = np.asarray(Image.open(mask_path))
        if truth.shape != photo.shape[:2]:
            truth = cv2.resize(truth, photo.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        outside = outside_parts(np.isin(truth, lip_ids), np.isin(truth, hair_ids), args.dilate_px)
        probs, mattes = parse_photo(parser, photo)
        own_lips, own_hair = sum(probs[p] for p in LIP_PARTS if p in probs) > 0.5, probs.get("hair", 0) > 0.5
        outside_own = outside_parts(own_lips, own_hair, args.dilate_px)
        parser_clean = float((~(own_lips | own_hair))[outside].mean())
        for lips_hex, hair_hex in COMBINATIONS:
            row = measure(name, photo, mattes, lips_hex, hair_hex, outside, outside_own, parser_clean)
            rows.append(row)
            print(f"{name:34s} {lips_hex:8s} {hair_hex:8s} {100 * row.unchanged:10.3f} {100 * row.unchanged_own:7.3f}"
                  f" {100 * row.parser_clean:7.3f}"
                  f" {fmt(row.lip_hue_err, '7.1f')}"
                  f" {fmt(row.hair_hue_err, '8.1f')} {fmt(row.hair_detail, '6.3f')}")

    summary = summarise(rows)
    per_combination = {f"{lips} / {hair}": summarise([r for r in rows if (r.lips, r.hair) == (lips, hair)])
                       for lips, hair in COMBINATIONS}
    print("\nmedians over", len(rows) // len(COMBINATIONS), "photos x", len(COMBINATIONS), "combinations:")
    for metric, s in summary.items():
        print(f"  {metric:13s} {s['median']:.4f}  target {s['target']:8s} {'met' if s['met'] else 'NOT met'}"
              f"  ({s['rows_meeting_target']} rows meet it)")
    report = {"model": parser.version, "photos": len(rows) // len(COMBINATIONS), "dilate_px": args.dilate_px,
              "intensity": 1.0, "high_matte": HIGH_MATTE, "max_levels": MAX_LEVELS,
              "summary": summary, "per_combination": per_combination, "rows": [asdict(r) for r in rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
