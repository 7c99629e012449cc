"""Photos as people take them: find the faces, frame each like a training face, paste the parsing back.

The model learns from CelebAMask-HQ, where every face is aligned (eyes level, a
fixed eye-to-mouth scale) and fills the frame. A selfie or a group photo is not
like that, so:

1. :class:`HaarFaceDetector` finds face boxes with OpenCV's bundled Haar
   cascades (weights inside ``opencv-python-headless`` 4.x: no download).
2. :func:`box_crop` turns a box into a square framed like a training image: on
   the aligned training images the cascade's box is ``1 / CROP_SCALE`` of the
   frame wide and its centre sits ``CROP_SHIFT`` box widths below the frame's
   (``python -m model_training.evaluate_faces --calibrate 200``).
3. The Haar box says little about where the eyes are (its width varies by
   +-10% against the aligned frame), so the parse of that first crop serves as
   landmarks: :func:`aligned_crop` places eyes and mouth the way CelebA-HQ did
   (the FFHQ / CelebA-HQ alignment recipe), rotation included, and the face is
   parsed again in that frame.
4. :func:`crop_face` cuts a (possibly rotated) crop at the model's input size
   with the shared preprocessing; :func:`paste_probabilities` maps each crop's
   class scores back into the photo: pixels outside every crop are background;
   where crops overlap, the face more sure that the pixel belongs to a person
   (highest non-background probability) owns it.

Coordinates are continuous photo pixels (pixel ``i`` spans ``[i, i + 1)``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import cv2
import cv2.data
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from face_parser.labels import LabelScheme
from face_parser.postprocess import bounded_size, class_probabilities, enlarge_labels

CROP_SCALE = 1.55
CROP_SHIFT = 0.08
EYES = ("l_eye", "r_eye")
MOUTH = ("mouth", "u_lip", "l_lip")


@dataclass(frozen=True)
class Crop:
    """A square of the photo seen by the parser: centre ``(cx, cy)``, ``side`` and ``angle``
    (radians, the crop's x axis measured from the photo's, clockwise on screen since y points down)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of the crop's x and y axes in photo coordinates."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return np.array([cos, sin]), np.array([-sin, cos])

    def to_photo(self, uv: np.ndarray) -> np.ndarray:
        """Crop coordinates in [0, 1] (``(N, 2)``, x then y) -> photo pixels."""
        ex, ey = self.axes()
        uv = (np.asarray(uv, dtype=np.float64) - 0.5) * self.side
        return np.array([self.cx, self.cy]) + uv[:, :1] * ex + uv[:, 1:] * ey

    def bounds(self) -> tuple[int, int, int, int]:
        """Integer ``(x0, y0, x1, y1)`` enclosing the crop (may lie past the photo's edges)."""
        corners = self.to_photo(np.array([[0, 0], [1, 0], [0, 1], [1, 1]]))
        x0, y0 = np.floor(corners.min(axis=0)).astype(int)
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
        return int(x0), int(y0), int(x1), int(y1)


@dataclass(frozen=True)
class Face:
    """One face: the detector's ``box`` ``(x, y, width, height)``, its confidence ``score``
    (Haar: neighbouring detections), and the ``crop`` the parser sees."""

    box: tuple[int, int, int, int]
    score: float
    crop: Crop


Box = tuple[int, int, int, int, float]  # x, y, width, height, score
FaceDetector = Callable[[np.ndarray], list[Box]]  # (H, W, 3) uint8 RGB -> boxes in photo pixels


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

    def __call__(self, image_hwc: np.ndarray) -> list[Box]:
        gray = cv2.cvtColor(image_hwc, cv2.COLOR_RGB2GRAY)
        with self._lock:
            boxes = self._search(self._frontal, gray, self.max_side)
            if self._profile is not None:  # the profile cascade knows one side only: search the mirror image too
                boxes += self._search(self._profile, gray, self.profile_max_side)
                width = gray.shape[1]
                mirrored = self._search(self._profile, gray, self.profile_max_side, mirror=True)
                boxes += [(width - x - w, y, w, h, s) for x, y, w, h, s in mirrored]
        return suppress_overlaps(boxes)

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
                for (x, y, w, h), n in zip(rects, neighbours, strict=True)]


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"cannot load the Haar cascade {path}; face finding needs opencv-python-headless>=4.9,<5")
    return cascade


def suppress_overlaps(boxes: Sequence[Box], max_overlap: float = 0.4) -> list[Box]:
    """Keep the most confident of boxes that overlap (intersection over the smaller box > ``max_overlap``)."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: (-b[4], -b[2] * b[3])):
        if all(_overlap(box, k) <= max_overlap for k in kept):
            kept.append(box)
    return kept


def _overlap(a, b) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return 0.0 if iw <= 0 or ih <= 0 else iw * ih / min(a[2] * a[3], b[2] * b[3])


def box_crop(box: Sequence[float], scale: float = CROP_SCALE, shift: float = CROP_SHIFT) -> Crop:
    """Detector box ``(x, y, w, h, ...)`` -> upright square crop framed like a training face."""
    x, y, w, h = box[:4]
    size = max(w, h)
    return Crop(x + w / 2, y + h / 2 - shift * size, max(1.0, size * scale))


def find_faces(image_hwc: np.ndarray, detector: FaceDetector, max_faces: int = 16) -> list[Face]:
    """The ``max_faces`` most confident faces, ordered left to right (their index in answers)."""
    boxes = sorted(detector(image_hwc), key=lambda b: -b[4])[:max_faces]
    faces = [Face((int(b[0]), int(b[1]), int(b[2]), int(b[3])), float(b[4]), box_crop(b)) for b in boxes]
    return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


def aligned_crop(scores_khw: torch.Tensor, crop: Crop, labels: LabelScheme, min_weight: float = 0.5) -> Crop | None:
    """The crop CelebA-HQ's alignment would take, from the eyes and mouth parsed in ``crop``.

    ``scores_khw``: the model's scores for ``crop``. Returns None when the eyes or
    the mouth are not found (a profile, a bad detection) or the new crop differs
    implausibly from the old one; the caller then keeps ``crop``.
    """
    if not all(name in labels.names for name in EYES + MOUTH):
        return None
    probs_khw = class_probabilities(scores_khw[None].float())[0]
    points = [_centroid(probs_khw[labels.ids_of([name])].sum(0), min_weight) for name in EYES]
    points.append(_centroid(probs_khw[labels.ids_of(MOUTH)].sum(0), min_weight))
    if any(p is None for p in points):
        return None
    eye_a, eye_b, mouth = crop.to_photo(np.array(points))
    eye_left, eye_right = sorted((eye_a, eye_b), key=lambda p: (p - mouth) @ crop.axes()[0])
    # CelebA-HQ / FFHQ: x axis from the eye line and the eye-to-mouth direction, size from both distances
    eye_avg, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    eye_to_mouth = mouth - eye_avg
    x_axis = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    half = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    centre = eye_avg + eye_to_mouth * 0.1
    new = Crop(float(centre[0]), float(centre[1]), float(2 * half), math.atan2(x_axis[1], x_axis[0]))
    moved = np.hypot(new.cx - crop.cx, new.cy - crop.cy) / crop.side
    if not (0.6 < new.side / crop.side < 1.6) or moved > 0.3 or abs(new.angle - crop.angle) > math.radians(45):
        return None
    return new


def _centroid(weight_hw: torch.Tensor, min_weight: float) -> tuple[float, float] | None:
    """Probability-weighted centre (x, y) in [0, 1] of the pixels above ``min_weight``, or None."""
    weight_hw = torch.where(weight_hw >= min_weight, weight_hw, torch.zeros(()))
    total = float(weight_hw.sum())
    if total < 1.0:
        return None
    height, width = weight_hw.shape
    ys = (torch.arange(height) + 0.5) / height
    xs = (torch.arange(width) + 0.5) / width
    return float((weight_hw.sum(0) * xs).sum() / total), float((weight_hw.sum(1) * ys).sum() / total)


def align_faces(faces: Sequence[Face], scores: Sequence[torch.Tensor], labels: LabelScheme) -> list[Face]:
    """Each face with its crop replaced by :func:`aligned_crop` where the landmarks allow."""
    aligned = []
    for face, scores_khw in zip(faces, scores, strict=True):
        crop = aligned_crop(scores_khw, face.crop, labels)
        aligned.append(replace(face, crop=crop) if crop is not None else face)
    return aligned


def crop_face(image_hwc: np.ndarray, crop: Crop, size: int) -> np.ndarray:
    """``crop`` of an ``(H, W, 3)`` uint8 photo as ``(size, size, 3)`` uint8; edge pixels repeat outside the photo.

    The square around the crop is first resized to the model's scale (PIL
    bilinear, antialiased: the training preprocessing), then rotated about its
    centre; an upright crop is not resampled a second time.
    """
    height, width = image_hwc.shape[:2]
    zoom = size / crop.side
    cos, sin = abs(math.cos(crop.angle)), abs(math.sin(crop.angle))
    # the rotated crop inside an n x n upright square at the model's scale; n - size even keeps the centres aligned
    n = size + 2 * math.ceil(size * (cos + sin - 1) / 2) + 2
    half = n / zoom / 2
    box = (crop.cx - half, crop.cy - half, crop.cx + half, crop.cy + half)
    margin = 2 + math.ceil(1 / zoom)  # the antialiasing filter's reach
    x0, y0 = math.floor(box[0]) - margin, math.floor(box[1]) - margin
    x1, y1 = math.ceil(box[2]) + margin, math.ceil(box[3]) + margin
    inner = image_hwc[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
    if inner.size == 0:
        raise ValueError(f"crop {crop} lies outside the {width}x{height} photo")
    pads = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
    region = cv2.copyMakeBorder(np.ascontiguousarray(inner), *pads, cv2.BORDER_REPLICATE) if any(pads) else inner
    square = np.asarray(Image.fromarray(np.ascontiguousarray(region)).resize(
        (n, n), Image.Resampling.BILINEAR, box=(box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)))
    # inverse map: crop pixel centre -> square pixel (OpenCV puts pixel centres at integers)
    ex, ey = crop.axes()
    origin = n / 2 - 0.5 + (0.5 - size / 2) * (ex + ey)
    matrix = np.array([[ex[0], ey[0], origin[0]], [ex[1], ey[1], origin[1]]])
    if crop.angle == 0.0:
        offset = round(origin[0])
        return np.ascontiguousarray(square[offset:offset + size, offset:offset + size])
    return cv2.warpAffine(square, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def paste_probabilities(
    scores: Sequence[torch.Tensor], crops: Sequence[Crop], photo_size: tuple[int, int],
    out_size: tuple[int, int] | None = None, class_ids: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-face class scores -> class probabilities over the whole photo.

    ``scores``: one ``(K, h, w)`` float tensor per face (the model's output for its
    crop); ``crops``: where each face was cut; ``out_size``: ``(H, W)`` of the answer
    (default ``photo_size``; a smaller one bounds memory for large photos);
    ``class_ids``: the channels to return (default all ``K``).

    Returns ``probs_chw`` float32 in [0, 1] (outside every face: 1 for class 0,
    background, and 0 for the others) and ``owner_hw`` int16, the index of the face
    that owns each pixel (-1: none).
    """
    height, width = out_size or photo_size
    zoom_y, zoom_x = height / photo_size[0], width / photo_size[1]
    n_classes = scores[0].shape[0] if len(scores) else 1
    ids = list(range(n_classes)) if class_ids is None else list(class_ids)
    probs_chw = torch.zeros(len(ids), height, width)
    if 0 in ids:
        probs_chw[ids.index(0)] = 1.0
    owner_hw = torch.full((height, width), -1, dtype=torch.int16)
    best_hw = torch.zeros(height, width)
    for index, (scores_khw, crop) in enumerate(zip(scores, crops, strict=True)):
        x0, y0, x1, y1 = crop.bounds()
        x0, y0 = max(0, math.floor(x0 * zoom_x)), max(0, math.floor(y0 * zoom_y))
        x1, y1 = min(width, math.ceil(x1 * zoom_x)), min(height, math.ceil(y1 * zoom_y))
        if x0 >= x1 or y0 >= y1:
            continue
        # each output pixel centre in the crop's [-1, 1] frame (grid_sample, align_corners=False)
        ex, ey = crop.axes()
        px = (torch.arange(x0, x1, dtype=torch.float64) + 0.5) / zoom_x - crop.cx
        py = (torch.arange(y0, y1, dtype=torch.float64) + 0.5) / zoom_y - crop.cy
        dy, dx = torch.meshgrid(py, px, indexing="ij")
        u = (dx * ex[0] + dy * ex[1]) * (2 / crop.side)
        v = (dx * ey[0] + dy * ey[1]) * (2 / crop.side)
        grid = torch.stack([u, v], dim=-1).float()[None]
        sampled = F.grid_sample(scores_khw[None].float(), grid, mode="bilinear", padding_mode="border",
                                align_corners=False)[0]
        crop_probs = class_probabilities(sampled[None])[0]
        person_hw = torch.where((u.abs() <= 1) & (v.abs() <= 1), 1.0 - crop_probs[0], torch.zeros(()))
        region = (slice(y0, y1), slice(x0, x1))
        wins = person_hw > best_hw[region]
        best_hw[region] = torch.where(wins, person_hw, best_hw[region])
        owner_hw[region][wins] = index
        probs_chw[(slice(None), *region)] = torch.where(wins, crop_probs[ids], probs_chw[(slice(None), *region)])
    return probs_chw, owner_hw


def face_label_map(scores: Sequence[torch.Tensor], crops: Sequence[Crop], photo_size: tuple[int, int],
                   max_side: int = 2048) -> torch.Tensor:
    """``(H, W)`` uint8 class ids of the whole photo from its faces (all background without faces).

    Like :func:`~face_parser.postprocess.label_map_bounded`: computed at most at
    ``max_side`` and enlarged by nearest neighbour beyond.
    """
    if not len(scores):
        return torch.zeros(photo_size, dtype=torch.uint8)
    probs_khw, _ = paste_probabilities(scores, crops, photo_size, bounded_size(photo_size, max_side))
    return enlarge_labels(probs_khw.max(dim=0).indices.to(torch.uint8), photo_size)
