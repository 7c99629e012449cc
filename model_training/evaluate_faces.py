"""Face finding on photos as people take them: held-out faces pasted small into larger canvases.

    python -m model_training.evaluate_faces --model models/face-parser \
        --data_dir ../shared/data/celebamask-mini --count 100 [--out reports/faces]

Each held-out pair (the same 100 as ``evaluate.py``: ``--val_count 100 --split_seed 0``)
is cut out along its mask and pasted, scaled to 15-40% of the canvas width, at a
random position on a larger canvas (plain, gradient, noise or the blurred
background of a training photo), its mask placed the same way (everything else
background); a second set of canvases holds two or three faces. Canvases are made
in memory from ``--seed`` and never written (CelebAMask-HQ licence).

Mean foreground F1 (the ``evaluate.py`` protocol) is reported for
(a) the aligned pairs parsed whole (and with face finding), (b) the canvases
with face finding (the service's ``faces=auto``), (c) the canvases parsed whole
(``faces=whole``), with face-finding and forward times. ``--calibrate N``
measures, on N training pairs, where the detector's box sits in an aligned
image: the crop geometry (``face_parser.faces.CROP_SCALE`` / ``CROP_SHIFT``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from face_parser.faces import (
    CROP_SCALE,
    CROP_SHIFT,
    HaarFaceDetector,
    align_faces,
    crop_face,
    face_label_map,
    find_faces,
)
from face_parser.modeling import FaceParser
from face_parser.preprocess import to_pixel_values
from model_training.evaluate import evaluate_parser, predict_label_maps
from model_training.metrics import ConfusionMatrix

CANVAS_WIDTHS = (768, 1024, 1280)
CANVAS_ASPECTS = (4 / 3, 3 / 4, 16 / 9, 1.0)  # width / height
BACKGROUNDS = ("plain", "gradient", "noise", "photo")


@dataclass
class Canvas:
    """A synthetic photo: ``image_hwc`` uint8 RGB, ``truth_hw`` uint8 class ids, pasted squares ``(x0, y0, x1, y1)``."""

    image_hwc: np.ndarray
    truth_hw: np.ndarray
    squares: list[tuple[int, int, int, int]]
    background: str


def background_patch(image_hwc: np.ndarray, mask_hw: np.ndarray) -> np.ndarray | None:
    """The largest all-background square at a top corner of a photo (>= 64 px), or None."""
    for side in (256, 192, 128, 96, 64):
        for corner in (np.s_[:side, :side], np.s_[:side, -side:]):
            if not mask_hw[corner].any():
                return image_hwc[corner]
    return None


def make_background(rng: np.random.Generator, height: int, width: int, kind: str,
                    donors: list[np.ndarray]) -> np.ndarray:
    """``(height, width, 3)`` uint8: a plain colour, a gradient, smooth noise or a donor photo's background."""
    if kind == "photo" and donors:
        patch = donors[rng.integers(len(donors))]
        return cv2.resize(patch, (width, height), interpolation=cv2.INTER_CUBIC)
    if kind == "gradient":
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
        t = (t - t.min()) / max(np.ptp(t), 1e-6)
        return (a + (b - a) * t[..., None]).astype(np.uint8)
    if kind == "noise":
        cells = int(rng.integers(4, 32))
        coarse = rng.integers(0, 256, (cells, cells, 3)).astype(np.float32)
        smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    return np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), (height, width, 3)).copy()


def paste_cutout(canvas: Canvas, image_hwc: np.ndarray, mask_hw: np.ndarray, square) -> None:
    """Paste the person (mask != background) of an aligned pair into ``square``, feathered by 1 px."""
    x0, y0, x1, y1 = square
    side = x1 - x0
    face = cv2.resize(image_hwc, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    mask = cv2.resize(mask_hw, (side, side), interpolation=cv2.INTER_NEAREST)
    alpha = cv2.GaussianBlur((mask != 0).astype(np.float32), (0, 0), 1.0)[..., None]
    region = canvas.image_hwc[y0:y1, x0:x1].astype(np.float32)
    canvas.image_hwc[y0:y1, x0:x1] = np.clip(alpha * face + (1 - alpha) * region, 0, 255).round().astype(np.uint8)
    truth = canvas.truth_hw[y0:y1, x0:x1]
    truth[mask != 0] = mask[mask != 0]
    canvas.squares.append(square)


def place_squares(rng: np.random.Generator, height: int, width: int, count: int,
                  tries: int = 200) -> list[tuple[int, int, int, int]]:
    """``count`` non-overlapping squares, each 15-40% of the width, inside the canvas."""
    squares: list[tuple[int, int, int, int]] = []
    for _ in range(tries):
        if len(squares) == count:
            break
        side = int(rng.uniform(0.15, 0.40) * width)
        side = min(side, height)
        x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        sq = (x0, y0, x0 + side, y0 + side)
        if all(sq[2] <= o[0] or o[2] <= sq[0] or sq[3] <= o[1] or o[3] <= sq[1] for o in squares):
            squares.append(sq)
    return squares


def make_canvas(rng: np.random.Generator, pairs: list[tuple[np.ndarray, np.ndarray]],
                donors: list[np.ndarray]) -> Canvas:
    """One canvas holding the faces of ``pairs`` (fewer if they do not fit)."""
    width = int(rng.choice(CANVAS_WIDTHS))
    height = round(width / float(rng.choice(CANVAS_ASPECTS)))
    kind = str(rng.choice(BACKGROUNDS))
    canvas = Canvas(make_background(rng, height, width, kind, donors), np.zeros((height, width), np.uint8), [], kind)
    for (image, mask), square in zip(pairs, place_squares(rng, height, width, len(pairs)), strict=False):
        paste_cutout(canvas, image, mask, square)
    return canvas


def parse_faces(parser: FaceParser, image_hwc: np.ndarray, faces: list) -> list:
    """One forward pass over the crops of ``faces``: their ``(K, h, w)`` scores."""
    if not faces:
        return []
    crops = [crop_face(image_hwc, f.crop, parser.preprocess.size) for f in faces]
    return list(parser.scores(to_pixel_values(crops, parser.preprocess)))


def parse_with_faces(parser: FaceParser, detector, image_hwc: np.ndarray, align: bool = True, max_side: int = 2048):
    """What ``faces=auto`` answers: ``(labels_hw, faces, detect_s, forward_s)``."""
    start = time.perf_counter()
    faces = find_faces(image_hwc, detector)
    detect_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = parse_faces(parser, image_hwc, faces)
    if align and faces:
        faces = align_faces(faces, scores, parser.labels)
        scores = parse_faces(parser, image_hwc, faces)
    forward_s = time.perf_counter() - start
    labels_hw = face_label_map(scores, [f.crop for f in faces], image_hwc.shape[:2], max_side).numpy()
    return labels_hw, faces, detect_s, forward_s


def matched(faces, squares, min_overlap: float = 0.5) -> tuple[int, int]:
    """``(true faces found, false detections)``: a face is found when a crop covers half its square or more."""
    def cover(crop, sq):
        iw = min(crop[2], sq[2]) - max(crop[0], sq[0])
        ih = min(crop[3], sq[3]) - max(crop[1], sq[1])
        return max(iw, 0) * max(ih, 0) / ((sq[2] - sq[0]) * (sq[3] - sq[1]))

    found = sum(any(cover(f.crop.bounds(), sq) >= min_overlap for f in faces) for sq in squares)
    false = sum(all(cover(f.crop.bounds(), sq) < min_overlap for sq in squares) for f in faces)
    return found, false


def evaluate_canvases(parser: FaceParser, detector, canvases: list[Canvas], align: bool = True) -> dict:
    """F1 with face finding and parsed whole, detection counts and times over ``canvases``."""
    names = list(parser.labels.names)
    auto_cm, whole_cm = ConfusionMatrix(len(names)), ConfusionMatrix(len(names))
    detect_ms, forward_ms, whole_ms = [], [], []
    faces_true = faces_found = false_faces = 0
    for canvas in canvases:
        labels_hw, faces, detect_s, forward_s = parse_with_faces(parser, detector, canvas.image_hwc, align)
        auto_cm.update(canvas.truth_hw, labels_hw)
        start = time.perf_counter()
        whole_cm.update(canvas.truth_hw, predict_label_maps(parser, [canvas.image_hwc], canvas.truth_hw.shape)[0])
        whole_ms.append((time.perf_counter() - start) * 1000)
        found, false = matched(faces, canvas.squares)
        faces_true += len(canvas.squares)
        faces_found += found
        false_faces += false
        detect_ms.append(detect_s * 1000)
        if faces:
            forward_ms.append(forward_s * 1000 / len(faces))
    auto, whole = auto_cm.scores(names), whole_cm.scores(names)
    return {
        "canvases": len(canvases), "faces": faces_true, "faces_found": faces_found, "false_detections": false_faces,
        "f1_face_finding": auto["mean_f1_foreground"], "f1_whole": whole["mean_f1_foreground"],
        "detect_ms_median": round(statistics.median(detect_ms), 1),
        "forward_ms_per_face_median": round(statistics.median(forward_ms), 1) if forward_ms else None,
        "whole_photo_ms_median": round(statistics.median(whole_ms), 1),
        "per_class_f1_face_finding": {n: v["f1"] for n, v in auto["per_class"].items()},
    }


def aligned_with_faces(parser: FaceParser, detector, dataset, indices, align: bool = True) -> float | None:
    """Mean foreground F1 of ``faces=auto`` on the aligned pairs themselves (what it costs a good photo)."""
    cm = ConfusionMatrix(len(parser.labels))
    for i in indices:
        image, truth = dataset[i]
        cm.update(truth, parse_with_faces(parser, detector, image, align)[0])
    return cm.scores(list(parser.labels.names))["mean_f1_foreground"]


def calibrate(dataset, indices, detector) -> dict:
    """Where the detector's box sits in aligned images: the crop that frames a face like training."""
    widths, shifts = [], []
    for i in indices:
        image, _ = dataset[i]
        boxes = detector(image)
        if not boxes:
            continue
        x, y, w, h, _ = max(boxes, key=lambda b: b[2] * b[3])
        side = image.shape[1]
        widths.append(w / side)
        shifts.append((y + h / 2 - side / 2) / w)  # how far the box centre sits below the frame centre
    return {"pairs": len(indices), "detected": len(widths), "crop_scale": round(1 / statistics.median(widths), 3),
            "crop_shift": round(statistics.median(shifts), 3), "box_width_fraction_p5_p95":
            [round(float(v), 3) for v in np.percentile(widths, [5, 95])]}


def build_canvases(dataset, val_idx, donors, count: int, seed: int) -> tuple[list[Canvas], list[Canvas]]:
    """``count`` one-face canvases (one per pair) and ``count // 2`` canvases with 2-3 faces."""
    rng = np.random.default_rng(seed)
    single = [make_canvas(rng, [dataset[i]], donors) for i in val_idx[:count]]
    multi = []
    for _ in range(count // 2):
        chosen = rng.choice(val_idx[:count], size=int(rng.integers(2, 4)), replace=False)
        multi.append(make_canvas(rng, [dataset[int(i)] for i in chosen], donors))
    return single, multi


def main(argv: list[str] | None = None) -> dict:
    from model_training.datasets.loaders import open_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/face-parser", help="model folder")
    ap.add_argument("--dataset", default="folder", help="folder | celebamask-hq | hf | lapa")
    ap.add_argument("--data_dir", default="../shared/data/celebamask-mini")
    ap.add_argument("--val_count", type=int, default=100, help="held-out pairs (as in training)")
    ap.add_argument("--split_seed", type=int, default=0)
    ap.add_argument("--image_column", default="image")
    ap.add_argument("--label_column", default="label")
    ap.add_argument("--count", type=int, default=100,
                    help="held-out pairs to use (one canvas each, and count/2 canvases with 2-3 of them)")
    ap.add_argument("--seed", type=int, default=0, help="canvas generation seed")
    ap.add_argument("--donors", type=int, default=50, help="training photos whose backgrounds become canvases")
    ap.add_argument("--calibrate", type=int, default=0, help="also measure the crop geometry on N training pairs")
    ap.add_argument("--min_face", type=float, default=0.05, help="smallest face box / shorter side")
    ap.add_argument("--no_profile", action="store_true", help="frontal cascade only (FACEPARSE_FACE_PROFILE=false)")
    ap.add_argument("--no_align", action="store_true", help="parse the detector's crop only (no landmark pass)")
    ap.add_argument("--out", default=None, help="folder for report.json")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    parser = FaceParser.load(args.model, device=args.device, dtype="float32")
    detector = HaarFaceDetector(min_face=args.min_face, profile=not args.no_profile)
    train_base, val_base, train_idx, val_idx = open_dataset(args)
    report: dict = {"model_version": parser.version, "crop_scale": CROP_SCALE, "crop_shift": CROP_SHIFT,
                    "min_face": args.min_face, "profile": not args.no_profile, "align": not args.no_align}
    if args.calibrate:
        report["calibration"] = calibrate(train_base, train_idx[:args.calibrate], detector)
    donors = [p for p in (background_patch(*train_base[i]) for i in train_idx[-args.donors:]) if p is not None]
    aligned, _ = evaluate_parser(parser, val_base, val_idx[:args.count], keep=0)
    report["f1_aligned"] = aligned["mean_f1_foreground"]
    report["f1_aligned_face_finding"] = aligned_with_faces(parser, detector, val_base, val_idx[:args.count],
                                                           not args.no_align)
    single, multi = build_canvases(val_base, val_idx, donors, args.count, args.seed)
    report["single_face"] = evaluate_canvases(parser, detector, single, not args.no_align)
    report["multi_face"] = evaluate_canvases(parser, detector, multi, not args.no_align)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "report.json").write_text(json.dumps(report, indent=2))
    summary = {k: v for k, v in report.items() if k not in ("single_face", "multi_face")}
    for part in ("single_face", "multi_face"):
        summary[part] = {k: v for k, v in report[part].items() if not k.startswith("per_class")}
    print(json.dumps(summary, indent=2))
    return report


if __name__ == "__main__":
    main()
