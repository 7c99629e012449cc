"""Face finding on photos as people take them: held-out faces pasted into larger canvases.

    python -m model_training.evaluate_faces --model models/face-parser \
        --data_dir ../shared/data/celebamask-mini --count 100 [--cases] [--out reports/faces]

Each held-out pair (the same 100 as ``evaluate.py``: ``--val_count 100 --split_seed 0``)
is cut out along its mask and pasted, scaled to 15-40% of the canvas width, at a
random position on a larger canvas (plain, gradient, noise or the blurred
background of a training photo), its mask placed the same way (everything else
background); a second set of canvases holds two or three faces. Canvases are made
in memory from ``--seed`` and never written (CelebAMask-HQ licence).

Mean foreground F1 (the ``evaluate.py`` protocol) is reported for
(a) the aligned pairs parsed whole (and with face finding), (b) the canvases
with face finding (the service's ``faces=auto``, through the same
:class:`~face_parser.pipeline.FacePipeline`), (c) the canvases parsed whole
(``faces=whole``), with face-finding and forward times. ``--cases`` adds harder
canvases (:data:`CASES`: small faces, in-plane rotation, whole square photos
pasted, JPEG quality 70, blur), each scored with the new path (BlazeFace, one
pass) and the old one (Haar, two passes). ``--calibrate N`` measures, on N
training pairs, where the Haar box sits in an aligned image
(``face_parser.faces.CROP_SCALE`` / ``CROP_SHIFT``); BlazeFace's landmark crop
is fitted by :mod:`model_training.fit_landmark_frame`.
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

from face_parser.detectors import BlazeFaceDetector, FaceDetector, HaarFaceDetector
from face_parser.faces import CROP_SCALE, CROP_SHIFT, LANDMARK_FRAME, find_faces
from face_parser.modeling import FaceParser
from face_parser.pipeline import FacePipeline
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


@dataclass(frozen=True)
class Case:
    """A kind of canvas: face width as a share of the canvas width, in-plane turn, the whole square photo pasted
    (not a cut-out), JPEG quality and Gaussian blur applied to the finished canvas."""

    name: str
    widths: tuple[float, float] = (0.15, 0.40)
    max_turn_deg: float = 0.0
    whole_square: bool = False
    jpeg_quality: int | None = None
    blur_sigma: float = 0.0


PLAIN = Case("cut-outs, 15-40% wide")
CASES = (
    PLAIN,
    Case("small, 5-15% wide", widths=(0.05, 0.15)),
    Case("turned up to 45 deg", max_turn_deg=45),
    Case("whole squares pasted", whole_square=True),
    Case("JPEG quality 70", jpeg_quality=70),
    Case("blur sigma 1.5", blur_sigma=1.5),
    Case("all of the above", widths=(0.05, 0.40), max_turn_deg=45, whole_square=True, jpeg_quality=70, blur_sigma=1.0),
)


def paste_face(canvas: Canvas, image_hwc: np.ndarray, mask_hw: np.ndarray, square, turn_deg: float = 0.0,
               whole: bool = False) -> None:
    """Paste an aligned pair into ``square``, turned ``turn_deg`` (counter-clockwise) about its centre: the
    person alone (mask != background, feathered by 1 px) or, with ``whole``, the square photo itself."""
    x0, y0, x1, y1 = square
    side = x1 - x0
    face = cv2.resize(image_hwc, (side, side), interpolation=cv2.INTER_AREA)
    # pixel centres, as INTER_AREA averages the photo over them (INTER_NEAREST samples from the corner: the
    # truth drifted up to a pixel right and down of the face it labels)
    mask = cv2.resize(mask_hw, (side, side), interpolation=cv2.INTER_NEAREST_EXACT)
    shown = np.ones((side, side), np.uint8)
    if turn_deg:
        turn = cv2.getRotationMatrix2D((side / 2 - 0.5, side / 2 - 0.5), turn_deg, 1.0)
        face = cv2.warpAffine(face, turn, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        mask = cv2.warpAffine(mask, turn, (side, side), flags=cv2.INTER_NEAREST)
        shown = cv2.warpAffine(shown, turn, (side, side), flags=cv2.INTER_NEAREST)
    keep = shown.astype(bool) if whole else mask != 0
    alpha = cv2.GaussianBlur(keep.astype(np.float32), (0, 0), 1.0)[..., None]
    region = canvas.image_hwc[y0:y1, x0:x1].astype(np.float32)
    canvas.image_hwc[y0:y1, x0:x1] = np.clip(alpha * face + (1 - alpha) * region, 0, 255).round().astype(np.uint8)
    canvas.truth_hw[y0:y1, x0:x1][keep] = mask[keep]
    canvas.squares.append(square)


def degrade(image_hwc: np.ndarray, case: Case) -> np.ndarray:
    """The finished canvas blurred and JPEG-compressed as ``case`` says."""
    if case.blur_sigma:
        image_hwc = cv2.GaussianBlur(image_hwc, (0, 0), case.blur_sigma)
    if case.jpeg_quality:
        _, data = cv2.imencode(".jpg", image_hwc[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, case.jpeg_quality])
        image_hwc = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(image_hwc)


def place_squares(rng: np.random.Generator, height: int, width: int, count: int, widths=(0.15, 0.40),
                  tries: int = 200) -> list[tuple[int, int, int, int]]:
    """``count`` non-overlapping squares, each ``widths`` (a range) of the width, inside the canvas."""
    squares: list[tuple[int, int, int, int]] = []
    for _ in range(tries):
        if len(squares) == count:
            break
        side = int(rng.uniform(*widths) * width)
        side = min(side, height)
        x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        sq = (x0, y0, x0 + side, y0 + side)
        if all(sq[2] <= o[0] or o[2] <= sq[0] or sq[3] <= o[1] or o[3] <= sq[1] for o in squares):
            squares.append(sq)
    return squares


def make_canvas(rng: np.random.Generator, pairs: list[tuple[np.ndarray, np.ndarray]],
                donors: list[np.ndarray], case: Case = PLAIN) -> Canvas:
    """One canvas holding the faces of ``pairs`` (fewer if they do not fit), made as ``case`` says."""
    width = int(rng.choice(CANVAS_WIDTHS))
    height = round(width / float(rng.choice(CANVAS_ASPECTS)))
    kind = str(rng.choice(BACKGROUNDS))
    canvas = Canvas(make_background(rng, height, width, kind, donors), np.zeros((height, width), np.uint8), [], kind)
    for (image, mask), square in zip(pairs, place_squares(rng, height, width, len(pairs), case.widths), strict=False):
        turn = float(rng.uniform(-case.max_turn_deg, case.max_turn_deg)) if case.max_turn_deg else 0.0
        paste_face(canvas, image, mask, square, turn, case.whole_square)
    canvas.image_hwc = degrade(canvas.image_hwc, case)
    return canvas


def pipeline_for(parser: FaceParser, detector: FaceDetector, second_pass: bool) -> FacePipeline:
    return FacePipeline(detector, parser.preprocess.size, parser.labels, second_pass=second_pass)


def parse_with_faces(parser: FaceParser, pipeline: FacePipeline, image_hwc: np.ndarray, max_side: int = 2048):
    """What ``faces=auto`` answers: ``(labels_hw, faces, detect_s, forward_s)``."""
    start = time.perf_counter()
    find_faces(image_hwc, pipeline.detector, pipeline.max_faces)  # timed alone; the pipeline finds them again
    detect_s = time.perf_counter() - start
    start = time.perf_counter()
    parsing = pipeline.run(image_hwc, parser.score_images)
    forward_s = time.perf_counter() - start - detect_s
    return parsing.label_map(image_hwc.shape[:2], max_side), parsing.faces, detect_s, forward_s


def matched(faces, squares, min_overlap: float = 0.5) -> tuple[int, int]:
    """``(true faces found, false detections)``: a face is found when a crop covers half its square or more."""
    def cover(crop, sq):
        iw = min(crop[2], sq[2]) - max(crop[0], sq[0])
        ih = min(crop[3], sq[3]) - max(crop[1], sq[1])
        return max(iw, 0) * max(ih, 0) / ((sq[2] - sq[0]) * (sq[3] - sq[1]))

    found = sum(any(cover(f.crop.bounds(), sq) >= min_overlap for f in faces) for sq in squares)
    false = sum(all(cover(f.crop.bounds(), sq) < min_overlap for sq in squares) for f in faces)
    return found, false


def evaluate_canvases(parser: FaceParser, pipeline: FacePipeline, canvases: list[Canvas], whole: bool = True,
                      answers: list | None = None) -> dict:
    """F1 with face finding and parsed whole, detection counts and times over ``canvases``; each canvas's
    ``(labels_hw, faces)`` is appended to ``answers`` when given."""
    names = list(parser.labels.names)
    auto_cm, whole_cm = ConfusionMatrix(len(names)), ConfusionMatrix(len(names))
    detect_ms, forward_ms, whole_ms = [], [], []
    faces_true = faces_found = false_faces = 0
    for canvas in canvases:
        labels_hw, faces, detect_s, forward_s = parse_with_faces(parser, pipeline, canvas.image_hwc)
        auto_cm.update(canvas.truth_hw, labels_hw)
        if answers is not None:
            answers.append((labels_hw, faces))
        if whole:
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
    auto = auto_cm.scores(names)
    report = {
        "canvases": len(canvases), "faces": faces_true, "faces_found": faces_found,
        "recall": round(faces_found / max(1, faces_true), 3), "false_detections": false_faces,
        "f1_face_finding": auto["mean_f1_foreground"],
        "detect_ms_median": round(statistics.median(detect_ms), 1),
        "forward_ms_per_face_median": round(statistics.median(forward_ms), 1) if forward_ms else None,
        "per_class_f1_face_finding": {n: v["f1"] for n, v in auto["per_class"].items()},
    }
    if whole:
        report["f1_whole"] = whole_cm.scores(names)["mean_f1_foreground"]
        report["whole_photo_ms_median"] = round(statistics.median(whole_ms), 1)
    return report


def aligned_with_faces(parser: FaceParser, pipeline: FacePipeline, dataset, indices) -> float | None:
    """Mean foreground F1 of ``faces=auto`` on the aligned pairs themselves (what it costs a good photo)."""
    cm = ConfusionMatrix(len(parser.labels))
    for i in indices:
        image, truth = dataset[i]
        cm.update(truth, parse_with_faces(parser, pipeline, image)[0])
    return cm.scores(list(parser.labels.names))["mean_f1_foreground"]


def calibrate(dataset, indices, haar: HaarFaceDetector) -> dict:
    """Where the Haar box sits in aligned images, whose frame is the training frame: its width and centre
    (``CROP_SCALE``, ``CROP_SHIFT``)."""
    widths, shifts = [], []
    for i in indices:
        image, _ = dataset[i]
        side = image.shape[1]
        boxes = haar(image)
        if boxes:
            _, y, w, h = max(boxes, key=lambda d: d.box[2] * d.box[3]).box
            widths.append(w / side)
            shifts.append((y + h / 2 - side / 2) / w)  # how far the box centre sits below the frame centre
    return {"pairs": len(indices), "haar_detected": len(widths), "crop_scale": round(1 / statistics.median(widths), 3),
            "crop_shift": round(statistics.median(shifts), 3),
            "box_width_fraction_p5_p95": [round(float(v), 3) for v in np.percentile(widths, [5, 95])]}


def common_faces_f1(canvases: list[Canvas], answers: dict[str, list], names: list[str]) -> dict[str, float]:
    """Each pipeline's pooled mean F1 inside the squares of the faces that every pipeline finds.

    A case's F1 pools every pixel, so a face that a pipeline finds and parses imperfectly costs it more
    than a face it misses (its wrong labels count as false positives too): finding more faces can lower
    the case F1. Here the parses are compared on the same faces. ``answers``: per pipeline, the
    ``(labels_hw, faces)`` of each canvas, in order."""
    cms = {name: ConfusionMatrix(len(names)) for name in answers}
    for c, canvas in enumerate(canvases):
        for square in canvas.squares:
            if not all(matched(answers[name][c][1], [square])[0] for name in answers):
                continue
            x0, y0, x1, y1 = (max(0, int(round(v))) for v in square)
            for name, per_canvas in answers.items():
                cms[name].update(canvas.truth_hw[y0:y1, x0:x1], per_canvas[c][0][y0:y1, x0:x1])
    return {name: cm.scores(names)["mean_f1_foreground"] for name, cm in cms.items()}


def evaluate_cases(parser: FaceParser, pipelines: dict[str, FacePipeline], dataset, pool, donors,
                   count: int, seed: int, names: list[str] | None = None) -> dict:
    """Each of :data:`CASES`: ``count`` canvases of 1-3 faces drawn from the pairs ``pool``, scored with each
    pipeline (the same canvases for each); with several pipelines, also each one's F1 on the faces all
    of them find (:func:`common_faces_f1`)."""
    out = {}
    for case in CASES:
        if names and case.name not in names:
            continue
        rng = np.random.default_rng(seed)
        chosen = [rng.choice(pool, size=int(rng.integers(1, 4)), replace=False) for _ in range(count)]
        canvases = [make_canvas(rng, [dataset[int(i)] for i in pairs], donors, case) for pairs in chosen]
        answers: dict[str, list] = {name: [] for name in pipelines}
        out[case.name] = {name: evaluate_canvases(parser, pipeline, canvases, whole=False, answers=answers[name])
                          for name, pipeline in pipelines.items()}
        if len(pipelines) > 1:
            for name, f1 in common_faces_f1(canvases, answers, list(parser.labels.names)).items():
                out[case.name][name]["f1_faces_all_find"] = f1
        print(case.name, json.dumps({n: {k: r.get(k) for k in ("recall", "false_detections", "f1_face_finding",
                                                              "f1_faces_all_find")}
                                     for n, r in out[case.name].items()}), flush=True)
    return out


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
    ap.add_argument("--calibrate", type=int, default=0, help="also measure the Haar box's geometry on N training pairs")
    ap.add_argument("--detector", default="blazeface", choices=("blazeface", "haar"), help="for (a)-(c)")
    ap.add_argument("--min_score", type=float, default=0.5, help="blazeface: lowest face probability kept "
                    "(FACEPARSE_FACE_MIN_SCORE)")
    ap.add_argument("--min_face", type=float, default=0.05, help="haar: smallest face box / shorter side")
    ap.add_argument("--no_profile", action="store_true", help="haar: frontal cascade only")
    ap.add_argument("--second_pass", action="store_true", help="(a)-(c): parse each face again, framed by its "
                    "parsed eyes and mouth (FACEPARSE_FACE_ALIGN=true)")
    ap.add_argument("--cases", action="store_true", help="also the harder canvases, new (BlazeFace, one pass) "
                    "against old (Haar with profile, two passes)")
    ap.add_argument("--case_count", type=int, default=40, help="canvases per case")
    ap.add_argument("--case_pipelines", nargs="+", default=["new", "old"], choices=("new", "old", "new_two_pass"),
                    help="new: BlazeFace, one pass; old: Haar, two passes; new_two_pass: BlazeFace, two passes")
    ap.add_argument("--case_names", nargs="*", default=None, help="only these cases (default: all)")
    ap.add_argument("--skip_basic", action="store_true", help="only --calibrate and --cases")
    ap.add_argument("--out", default=None, help="folder for report.json")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    parser = FaceParser.load(args.model, device=args.device, dtype="float32")
    haar = HaarFaceDetector(min_face=args.min_face, profile=not args.no_profile)
    blazeface = BlazeFaceDetector(min_score=args.min_score)
    pipeline = pipeline_for(parser, blazeface if args.detector == "blazeface" else haar, args.second_pass)
    train_base, val_base, train_idx, val_idx = open_dataset(args)
    report: dict = {"model_version": parser.version, "detector": args.detector, "second_pass": args.second_pass,
                    "crop_scale": CROP_SCALE, "crop_shift": CROP_SHIFT,
                    "landmark_frame": {k: LANDMARK_FRAME.fit.get(k) for k in ("command", "validation_warped")}}
    if args.calibrate:
        report["calibration"] = calibrate(train_base, train_idx[:args.calibrate], haar)
    donors = [p for p in (background_patch(*train_base[i]) for i in train_idx[-args.donors:]) if p is not None]
    if not args.skip_basic:
        aligned, _ = evaluate_parser(parser, val_base, val_idx[:args.count], keep=0)
        report["f1_aligned"] = aligned["mean_f1_foreground"]
        report["f1_aligned_face_finding"] = aligned_with_faces(parser, pipeline, val_base, val_idx[:args.count])
        single, multi = build_canvases(val_base, val_idx, donors, args.count, args.seed)
        report["single_face"] = evaluate_canvases(parser, pipeline, single)
        report["multi_face"] = evaluate_canvases(parser, pipeline, multi)
    if args.cases:
        choices = {"new": (blazeface, False), "old": (haar, True), "new_two_pass": (blazeface, True)}
        pipelines = {name: pipeline_for(parser, *choices[name]) for name in args.case_pipelines}
        report["cases"] = evaluate_cases(parser, pipelines, val_base, val_idx[:args.count], donors,
                                         args.case_count, args.seed, args.case_names)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(strip_per_class(report), indent=2))
    return report


def strip_per_class(report):
    """The report without its per-class tables (what is printed)."""
    if isinstance(report, dict):
        return {k: strip_per_class(v) for k, v in report.items() if not k.startswith("per_class")}
    return report


if __name__ == "__main__":
    main()
