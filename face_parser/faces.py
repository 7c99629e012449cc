"""Photos as people take them: find the faces and frame each like a training face.

The model learns from CelebAMask-HQ, where every face is aligned (eyes level, a
fixed eye-to-mouth scale) and fills the frame. A selfie or a group photo is not
like that, so:

1. A detector (:mod:`face_parser.detectors`; BlazeFace by default) finds the
   faces, with eye, nose and mouth landmarks. BlazeFace then takes a
   :func:`second_look` at each candidate alone, upright and at a fixed scale:
   finer landmarks, and a face the photo's search was unsure of is kept when
   the face alone looks sure (:func:`looked_twice`).
2. :func:`landmark_crop` frames each face from its eyes and mouth the way
   CelebA-HQ was aligned (:func:`celeba_crop`, rotation included), then moves,
   scales and turns that crop by a linear function of where all six points sit
   in it (:class:`LandmarkFrame`, fitted on training photos). A detector
   without landmarks (Haar) gets :func:`box_crop`: on the aligned training
   images the cascade's box is ``1 / CROP_SCALE`` of the frame wide and its
   centre sits ``CROP_SHIFT`` box widths below the frame's.
3. Optionally (a second forward pass), the parse of that first crop serves as
   landmarks: :func:`aligned_crop` frames the face again from its parsed eyes
   and mouth.
4. :func:`crop_face` cuts a (possibly rotated) crop at the model's input size
   with the shared preprocessing; :mod:`face_parser.paste` maps the parsing back.

:mod:`face_parser.pipeline` strings these steps together.
Coordinates are continuous photo pixels (pixel ``i`` spans ``[i, i + 1)``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import cv2.data
import numpy as np
import torch
from PIL import Image

from face_parser.detectors import (
    EAR_LEFT,
    EAR_RIGHT,
    EYE_LEFT,
    EYE_RIGHT,
    MOUTH,
    NOSE,
    BlazeFaceDetector,
    Detection,
    FaceDetector,
    as_detection,
)
from face_parser.labels import LabelScheme
from face_parser.postprocess import class_probabilities

CROP_SCALE = 1.55
CROP_SHIFT = 0.08
LANDMARK_FRAME_FILE = Path(__file__).with_name("landmark_frame.json")  # python -m model_training.fit_landmark_frame
SECOND_LOOK_SPAN = 1.5  # the second look's window / the face's celeba_crop: an aligned photo in its whole window
MAX_VIEWS = 3  # views of one candidate face, at most, after the photo's search
SETTLED = (0.1, 0.25, math.radians(15))  # a look that moved the frame less (centre / side, log size, angle) is final
EYES = ("l_eye", "r_eye")
MOUTH_PARTS = ("mouth", "u_lip", "l_lip")


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

    def to_crop(self, xy: np.ndarray) -> np.ndarray:
        """Photo pixels ``(N, 2)`` -> crop coordinates (the inverse of :meth:`to_photo`)."""
        offset = np.asarray(xy, dtype=np.float64) - np.array([self.cx, self.cy])
        ex, ey = self.axes()
        return np.stack([offset @ ex, offset @ ey], axis=1) / self.side + 0.5

    def bounds(self) -> tuple[int, int, int, int]:
        """Integer ``(x0, y0, x1, y1)`` enclosing the crop (may lie past the photo's edges)."""
        corners = self.to_photo(np.array([[0, 0], [1, 0], [0, 1], [1, 1]]))
        x0, y0 = np.floor(corners.min(axis=0)).astype(int)
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
        return int(x0), int(y0), int(x1), int(y1)


@dataclass(frozen=True)
class Face:
    """One face: the detector's ``box`` ``(x, y, width, height)``, its confidence ``score``, the ``crop``
    the parser sees and, when the detector gives them, ``landmarks``: ``(x, y)`` of the photo-left eye,
    the other eye, nose tip, mouth centre and the two ears."""

    box: tuple[int, int, int, int]
    score: float
    crop: Crop
    landmarks: tuple[tuple[float, float], ...] | None = None


def box_crop(box: Sequence[float], scale: float = CROP_SCALE, shift: float = CROP_SHIFT) -> Crop:
    """Detector box ``(x, y, w, h, ...)`` -> upright square crop framed like a training face."""
    x, y, w, h = box[:4]
    size = max(w, h)
    return Crop(x + w / 2, y + h / 2 - shift * size, max(1.0, size * scale))


def celeba_crop(eye_a: np.ndarray, eye_b: np.ndarray, mouth: np.ndarray) -> Crop:
    """The square CelebA-HQ's alignment (the FFHQ recipe) cuts around two eye centres and the mouth's.

    x axis along the eye line corrected by the eye-to-mouth direction; side
    ``max(4 x eye distance, 3.6 x eye-to-mouth distance)``; centre a tenth of
    the way from the eyes' midpoint to the mouth. Which eye is which follows
    from the mouth, so a face upside down is framed upside down.
    """
    eye_a, eye_b, mouth = (np.asarray(p, dtype=np.float64) for p in (eye_a, eye_b, mouth))
    eye_avg = (eye_a + eye_b) / 2
    eye_to_mouth = mouth - eye_avg
    across = np.array([eye_to_mouth[1], -eye_to_mouth[0]])  # eye_to_mouth turned a quarter back: the face's x
    eye_left, eye_right = sorted((eye_a, eye_b), key=lambda p: float((p - eye_avg) @ across))
    eye_to_eye = eye_right - eye_left
    x_axis = eye_to_eye + across
    half = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    centre = eye_avg + eye_to_mouth * 0.1
    return Crop(float(centre[0]), float(centre[1]), float(2 * half), math.atan2(x_axis[1], x_axis[0]))


def frame_offset(crop: Crop, truth: Crop) -> np.ndarray:
    """What takes ``crop`` onto ``truth``: ``(dx, dy, log side ratio, turn)``, the centre's move in crop
    sides along ``crop``'s axes and the turn in radians, so it does not depend on where the face is."""
    dx, dy = crop.to_crop(np.array([[truth.cx, truth.cy]]))[0] - 0.5
    turn = math.remainder(truth.angle - crop.angle, 2 * math.pi)
    return np.array([dx, dy, math.log(truth.side / crop.side), turn])


def offset_crop(crop: Crop, offset: Sequence[float]) -> Crop:
    """``crop`` moved, scaled and turned by a :func:`frame_offset`."""
    dx, dy, log_side, turn = (float(v) for v in offset)
    cx, cy = crop.to_photo(np.array([[0.5 + dx, 0.5 + dy]]))[0]
    return Crop(float(cx), float(cy), crop.side * math.exp(log_side), crop.angle + turn)


def landmark_features(landmarks: np.ndarray, crop: Crop) -> np.ndarray:
    """The six points ``(6, 2)`` in ``crop``'s frame, centred, as 12 numbers: both eyes, nose, mouth,
    both ears, each pair in order along the face's x axis (not the photo's), so a face turned in the
    photo gives the same numbers and a mirrored one mirrored numbers."""
    uv = crop.to_crop(landmarks) - 0.5
    eyes, ears = (uv[sorted(pair, key=lambda i: uv[i, 0])] for pair in ((EYE_LEFT, EYE_RIGHT), (EAR_LEFT, EAR_RIGHT)))
    return np.concatenate([eyes, uv[[NOSE, MOUTH]], ears]).ravel()


@dataclass(frozen=True, eq=False)
class LandmarkFrame:
    """A linear correction of :func:`celeba_crop` for BlazeFace's points, which are not CelebA's.

    BlazeFace's eyes and mouth (its mouth point is the mouth's middle, not the
    corners') frame a face less like CelebA-HQ did: on held-out photos, aligned
    or warped onto canvases, the crop of its second-look points is off the
    training frame's by 3.0-3.3 degrees and its side by 6.3-6.4% (RMS), and the
    parse suffers. Where all six points sit in that crop (the nose and ears too:
    a face turned sideways, looking up or down) predicts part of that error, so
    the :func:`frame_offset` to the training frame is taken as ``weights @
    landmark_features + bias``: 1.7-2.4 degrees and 5.2-5.5% left.
    Fitted (ridge) on training photos, aligned and warped, by ``python -m
    model_training.fit_landmark_frame``, which records how and what it measured
    on held-out photos in ``fit``.
    """

    weights: np.ndarray  # (4, 12): dx, dy, log side ratio, turn from the 12 landmark_features
    bias: np.ndarray  # (4,)
    fit: dict = field(default_factory=dict)  # how it was fitted and what it measured

    @classmethod
    def load(cls, path: str | Path = LANDMARK_FRAME_FILE) -> LandmarkFrame:
        data = json.loads(Path(path).read_text())
        return cls(np.array(data["weights"], dtype=np.float64), np.array(data["bias"], dtype=np.float64),
                   data.get("fit", {}))

    def correct(self, crop: Crop, landmarks: np.ndarray) -> Crop:
        """``crop`` (:func:`celeba_crop` of ``landmarks``) moved onto where the training frame should be."""
        return offset_crop(crop, self.weights @ landmark_features(landmarks, crop) + self.bias)


LANDMARK_FRAME = LandmarkFrame.load()


def landmark_crop(landmarks: np.ndarray, frame: LandmarkFrame | None = LANDMARK_FRAME) -> Crop:
    """BlazeFace landmarks ``(6, 2)`` -> the crop framed like a training face: :func:`celeba_crop` of
    its eye and mouth points, corrected by ``frame`` (None: not corrected, what the fit starts from)."""
    crop = celeba_crop(landmarks[EYE_LEFT], landmarks[EYE_RIGHT], landmarks[MOUTH])
    return crop if frame is None else frame.correct(crop, landmarks)


def face_of(found: Detection) -> Face:
    """A detection as a :class:`Face`: framed by its landmarks when it has them, else by its box."""
    box = tuple(round(v) for v in found.box)
    if found.landmarks is None:
        return Face(box, found.score, box_crop(found.box))  # type: ignore[arg-type]
    points = tuple((float(x), float(y)) for x, y in found.landmarks)
    return Face(box, found.score, landmark_crop(found.landmarks), points)  # type: ignore[arg-type]


def second_look(image_hwc: np.ndarray, found: Detection, detector: BlazeFaceDetector,
                max_views: int = MAX_VIEWS) -> tuple[Detection, float]:
    """``found`` as BlazeFace sees it when it looks at the face alone, and the surest score of those views
    (0 when none saw a face there). The view is upright (turned by the eye line of the look before) and at
    the scale an aligned photo has in the whole-photo search window. The view's landmarks replace the photo
    search's, and the detection's score is the surest of all looks. When the face a view frames is not the
    one it was framed on (:func:`settled`), it looks again from there, at most ``max_views`` views in all.

    In a photo's search windows a face may be a few model pixels wide and turned: the crop its points frame
    is off by 6.3 degrees and 10% of its side (RMS, warped validation photos), and a small, turned or half
    hidden face may score below ``min_score``. Seen again the crop is off by 3.0 degrees and 6.4%, about as on
    aligned photos, and a face scores as a face. Costs one pass of the detector (~2 ms) a view. A photo's
    search may frame a small turned face two to three times too large; the face then fills a fraction of
    the view and its points are coarse, hence the views that follow.
    (A mirrored view averaged in framed the crops better still, 1.9 against 2.6 degrees on aligned photos
    after the correction, but parsed no better on the evaluation canvases, for a second pass.)
    """
    best = 0.0
    landmarks = found.landmarks
    if landmarks is None:
        return found, best
    before = celeba_crop(landmarks[EYE_LEFT], landmarks[EYE_RIGHT], landmarks[MOUTH])
    for _ in range(max_views):
        window = replace(before, side=before.side * SECOND_LOOK_SPAN)
        seen = detector.landmarks_in_view(crop_face(image_hwc, window, detector.SIZE))
        if seen is None:
            break
        points, score = seen
        best = max(best, score)
        landmarks = window.to_photo(points / detector.SIZE)
        found = replace(found, score=max(found.score, score), landmarks=landmarks)
        after = celeba_crop(landmarks[EYE_LEFT], landmarks[EYE_RIGHT], landmarks[MOUTH])
        if settled(before, after):
            break
        before = after
    return found, best


def settled(before: Crop, after: Crop) -> bool:
    """Whether the crop a view's landmarks frame (``after``) is close to the one the view was framed on
    (``before``): within ``SETTLED[0]`` of its side in centre, ``SETTLED[1]`` in log size, ``SETTLED[2]`` in angle."""
    dx, dy, log_side, turn = frame_offset(before, after)
    return math.hypot(dx, dy) < SETTLED[0] and abs(log_side) < SETTLED[1] and abs(turn) < SETTLED[2]


def find_faces(image_hwc: np.ndarray, detector: FaceDetector, max_faces: int = 16) -> list[Face]:
    """The ``max_faces`` most confident faces, ordered left to right (their index in answers).

    With BlazeFace, each candidate face gets a :func:`second_look` (:func:`looked_twice`).
    """
    if isinstance(detector, BlazeFaceDetector):
        faces = looked_twice(image_hwc, detector, 2 * max_faces)
    else:
        faces = [face_of(as_detection(d)) for d in detector(image_hwc)]
    faces = sorted(faces, key=lambda f: -f.score)[:max_faces]
    return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


def looked_twice(image_hwc: np.ndarray, detector: BlazeFaceDetector, max_looks: int) -> list[Face]:
    """BlazeFace's candidates, surest first, each seen again (:func:`second_look`) and kept when a look was
    ``min_score`` sure of it and the second look saw a face there at all; a candidate framed on a face
    already kept, before or after its second look, is the same face found twice. At most ``max_looks``
    candidates get a second look.

    A false face the photo's search is sure of is often a cluster of weak candidates merged into one
    (one 836 px wide scored 0.57 on a canvas of small faces), and seen alone it shows no face at all."""
    faces: list[Face] = []
    looks = 0
    for candidate in sorted(detector.candidates(image_hwc), key=lambda d: -d.score):
        if looks == max_looks:
            break
        if not apart(face_of(candidate), faces):
            continue
        looks += 1
        found, seen = second_look(image_hwc, candidate, detector)
        face = face_of(found)
        if found.score >= detector.min_score and seen > 0 and apart(face, faces):
            faces.append(face)
    return faces


def apart(face: Face, others: Sequence[Face], min_distance: float = 0.3) -> bool:
    """Whether ``face``'s crop centre is more than ``min_distance`` of the larger side from every other's."""
    c = face.crop
    return all(math.hypot(c.cx - o.crop.cx, c.cy - o.crop.cy) > min_distance * max(c.side, o.crop.side)
               for o in others)


def aligned_crop(scores_khw: torch.Tensor, crop: Crop, labels: LabelScheme, min_weight: float = 0.5) -> Crop | None:
    """The crop CelebA-HQ's alignment would take, from the eyes and mouth parsed in ``crop``.

    ``scores_khw``: the model's scores for ``crop``. Returns None when the eyes or
    the mouth are not found (a profile, a bad detection) or the new crop differs
    implausibly from the old one; the caller then keeps ``crop``.
    """
    if not all(name in labels.names for name in EYES + MOUTH_PARTS):
        return None
    probs_khw = class_probabilities(scores_khw[None].float())[0]
    points = [_centroid(probs_khw[labels.ids_of([name])].sum(0), min_weight) for name in EYES]
    points.append(_centroid(probs_khw[labels.ids_of(MOUTH_PARTS)].sum(0), min_weight))
    if any(p is None for p in points):
        return None
    new = celeba_crop(*crop.to_photo(np.array(points)))
    moved = np.hypot(new.cx - crop.cx, new.cy - crop.cy) / crop.side
    turned = abs((new.angle - crop.angle + math.pi) % (2 * math.pi) - math.pi)
    if not (0.6 < new.side / crop.side < 1.6) or moved > 0.3 or turned > math.radians(45):
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
