"""Fit the correction of BlazeFace's landmark crop (``face_parser/landmark_frame.json``) on training photos.

    python -m model_training.fit_landmark_frame --data_dir ../shared/data/celebamask-mini \
        [--warps 4] [--alpha 0.001] [--out face_parser/landmark_frame.json]

An aligned CelebA-HQ photo is its own training frame (centre, whole side, no
turn), so BlazeFace's points on it say how far :func:`~face_parser.faces.celeba_crop`
of those points lands from where it should (:func:`~face_parser.faces.frame_offset`).
Samples: each training pair (``split_indices(n, val_count, split_seed,
test_count)``; never a validation or test pair) as it is and mirrored, and
``--warps`` random similarity warps of it onto a larger plain canvas (10-45% of
the canvas wide, turned up to +-45 degrees, anywhere on it, mirrored or not, as
the evaluation canvases place faces), whose frame is known from the warp. A ridge
regression maps :func:`~face_parser.faces.landmark_features` to the offset.

The validation pairs, aligned and warped the same way (another seed), measure it:
RMS angle (degrees), side (%) and centre (% of the side) errors of
``celeba_crop`` alone, of a constant offset (all a global scale and shift can
do) and of the fit. The test pairs are left alone. CelebAMask-HQ photos are read
in memory and never written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from face_parser.detectors import BlazeFaceDetector
from face_parser.faces import LANDMARK_FRAME_FILE, Crop, find_faces, frame_offset, landmark_crop, landmark_features

CANVAS_SIDES = (768, 1024, 1280)
FACE_WIDTHS = (0.10, 0.45)  # of the canvas
MAX_TURN_DEG = 45.0
TARGETS = ("dx", "dy", "log_side", "turn")
VAL_WARPS = 4  # warped copies of each validation photo that measure the fit (whatever --warps fits with)


def warp_photo(rng: np.random.Generator, image_hwc: np.ndarray) -> tuple[np.ndarray, Crop]:
    """An aligned photo shrunk, maybe mirrored, turned and placed on a plain square canvas; the canvas and
    the photo's frame on it (continuous pixels: OpenCV's pixel centres are half a pixel off)."""
    canvas_side = int(rng.choice(CANVAS_SIDES))
    side = max(16, round(rng.uniform(*FACE_WIDTHS) * canvas_side))
    face = cv2.resize(image_hwc, (side, side), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        face = face[:, ::-1]  # the frame of an aligned face mirrored is the same frame
    angle = math.radians(rng.uniform(-MAX_TURN_DEG, MAX_TURN_DEG))
    reach = side * (abs(math.cos(angle)) + abs(math.sin(angle))) / 2
    cx, cy = rng.uniform(reach, canvas_side - reach, 2)
    truth = Crop(float(cx), float(cy), float(side), angle)
    ex, ey = truth.axes()
    origin = np.array([cx, cy]) - 0.5 + (0.5 - side / 2) * (ex + ey)
    matrix = np.array([[ex[0], ey[0], origin[0]], [ex[1], ey[1], origin[1]]])
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    canvas = cv2.warpAffine(np.ascontiguousarray(face), matrix, (canvas_side, canvas_side), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=colour)
    return canvas, truth


def views(rng: np.random.Generator, image_hwc: np.ndarray, warps: int, aligned: int):
    """``aligned`` (0-2) views of the aligned photo (as it is, then mirrored) with its frame, then ``warps``
    warped copies with theirs."""
    side = image_hwc.shape[1]
    whole = Crop(side / 2, image_hwc.shape[0] / 2, float(side))
    for flip in range(aligned):
        yield np.ascontiguousarray(image_hwc[:, ::-1] if flip else image_hwc), whole
    for _ in range(warps):
        yield warp_photo(rng, image_hwc)


def sample(detector: BlazeFaceDetector, image_hwc: np.ndarray, truth: Crop) -> tuple[np.ndarray, np.ndarray] | None:
    """``(landmark_features, frame_offset)`` of the face nearest ``truth``'s centre, as the service finds it (second
    look included), or None when BlazeFace finds none within a quarter of its side."""
    points = [np.array(f.landmarks) for f in find_faces(image_hwc, detector) if f.landmarks is not None]
    crops = [landmark_crop(p, None) for p in points]
    distance = [math.hypot(c.cx - truth.cx, c.cy - truth.cy) / truth.side for c in crops]
    if not crops or min(distance) > 0.25:
        return None
    best = int(np.argmin(distance))
    return landmark_features(points[best], crops[best]), frame_offset(crops[best], truth)


def collect(detector: BlazeFaceDetector, dataset, indices, warps: int, seed: int,
            aligned: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Features ``(N, 12)`` and offsets ``(N, 4)`` of the :func:`views` of ``indices``, and how many views had no
    face found."""
    rng = np.random.default_rng(seed)
    rows, missed = [], 0
    for i in indices:
        for image, truth in views(rng, dataset[i][0], warps, aligned):
            row = sample(detector, image, truth)
            missed += row is None
            if row is not None:
                rows.append(row)
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), missed


def fit_ridge(x_n12: np.ndarray, y_n4: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """``(weights (4, 12), bias (4,))`` of a ridge regression on standardised features (``alpha`` per sample,
    so it does not depend on how many there are), folded back to raw features."""
    mean, scale = x_n12.mean(0), x_n12.std(0) + 1e-9
    xs = (x_n12 - mean) / scale
    gram = xs.T @ xs + alpha * len(xs) * np.eye(xs.shape[1])
    coef = np.linalg.solve(gram, xs.T @ (y_n4 - y_n4.mean(0))).T / scale
    return coef, y_n4.mean(0) - coef @ mean


def errors(predicted_n4: np.ndarray, truth_n4: np.ndarray) -> dict:
    """RMS errors of the crops ``predicted`` offsets make, against the training frames: angle (degrees), side and
    centre (% of the true side). Both offsets are from the same uncorrected crop, so this needs no crops."""
    angle = np.degrees(np.remainder(predicted_n4[:, 3] - truth_n4[:, 3] + np.pi, 2 * np.pi) - np.pi)
    side = np.exp(predicted_n4[:, 2] - truth_n4[:, 2]) - 1
    centre = np.hypot(*(predicted_n4[:, :2] - truth_n4[:, :2]).T) * np.exp(-truth_n4[:, 2])
    rms = lambda v: round(float(np.sqrt(np.mean(np.square(v)))), 2)  # noqa: E731
    return {"angle_deg": rms(angle), "side_pct": rms(side * 100), "centre_pct": rms(centre * 100)}


def compare(x_n12, y_n4, weights, bias, constant_4) -> dict:
    """Errors of ``celeba_crop`` alone, of one offset for every face (``constant_4``: the training mean, all a
    global scale, shift and turn can do) and of the fit."""
    return {"celeba_crop": errors(np.zeros_like(y_n4), y_n4),
            "constant": errors(np.broadcast_to(constant_4, y_n4.shape), y_n4),
            "fit": errors(x_n12 @ weights.T + bias, y_n4), "samples": len(y_n4)}


def main(argv: list[str] | None = None) -> dict:
    from model_training.data import split_indices
    from model_training.datasets.base import DatasetError
    from model_training.datasets.folders import FolderDataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", default="../shared/data/celebamask-mini", help="aligned pairs (a folder dataset)")
    ap.add_argument("--val_count", type=int, default=100)
    ap.add_argument("--test_count", type=int, default=100)
    ap.add_argument("--split_seed", type=int, default=0)
    ap.add_argument("--warps", type=int, default=4, help="warped copies of each photo")
    ap.add_argument("--alpha", type=float, default=1e-3, help="ridge penalty on standardised features")
    ap.add_argument("--seed", type=int, default=0, help="warp seed (validation: seed + 1)")
    ap.add_argument("--out", default=str(LANDMARK_FRAME_FILE), help="where to write the coefficients ('' not at all)")
    args = ap.parse_args(argv)

    try:
        dataset = FolderDataset(args.data_dir)
    except DatasetError as exc:
        sys.exit(f"--data_dir {args.data_dir}: {exc}")
    train_idx, val_idx, _ = split_indices(len(dataset), args.val_count, args.split_seed, args.test_count)
    detector = BlazeFaceDetector()
    x_train, y_train, missed = collect(detector, dataset, train_idx, args.warps, args.seed, aligned=2)
    weights, bias = fit_ridge(x_train, y_train, args.alpha)
    mean = y_train.mean(0)
    fit: dict = {"command": " ".join(["python -m model_training.fit_landmark_frame", *(argv or sys.argv[1:])]),
                 "pairs": {"train": len(train_idx), "validation": len(val_idx)},
                 "warps": args.warps, "alpha": args.alpha, "seed": args.seed,
                 "mean_offset": np.round(mean, 6).tolist(),
                 "train": {**compare(x_train, y_train, weights, bias, mean), "missed": missed}}
    for name, warps, aligned in (("validation_aligned", 0, 1), ("validation_warped", VAL_WARPS, 0)):
        x_val, y_val, missed = collect(detector, dataset, val_idx, warps, args.seed + 1, aligned)
        fit[name] = {**compare(x_val, y_val, weights, bias, mean), "missed": missed}
    report = {"about": "face_parser.faces.LandmarkFrame: weights @ landmark_features + bias = frame_offset",
              "features": [f"{p}_{a}" for p in ("eye_l", "eye_r", "nose", "mouth", "ear_l", "ear_r") for a in "xy"],
              "targets": list(TARGETS), "weights": np.round(weights, 6).tolist(), "bias": np.round(bias, 6).tolist(),
              "fit": fit}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(fit, indent=1))
    return report


if __name__ == "__main__":
    main()
