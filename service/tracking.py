"""Live streams: follow faces from frame to frame, and steady the mattes over time without lag.

One motion estimate per frame serves both jobs: sparse optical flow (Shi-Tomasi
corners tracked by pyramidal Lucas-Kanade, checked forwards and backwards)
inside the tracked faces, fitted with a similarity (shift, zoom, turn) by RANSAC.

- :class:`FaceTracker` moves each face's crop with that motion, so the model sees
  the face where it is in this frame, not where it was; after the forward pass the
  crop is nudged towards the one the parsed eyes and mouth give (``align_faces``),
  which keeps it framed without a second pass. The detector runs only every
  ``detect_every`` frames, or at once when the track is lost (no motion, eyes or
  mouth not found; every ``EMPTY_RETRY`` frames while no face is found); detections that overlap a tracked
  face keep the tracked crop, so a re-detection does not make the crop jump.
- :class:`MatteSmoother` warps the previous smoothed mattes by the same motion
  and averages them with the new ones (an exponential moving average in the
  face's own frame): camera noise averages out, and because the average is taken
  after the warp, a moving face is not trailed. Where the new matte differs
  strongly from the warped one (a mouth opening, a wrong motion), the new one
  wins at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np
import torch

from face_parser.faces import Crop, Face, FaceDetector, aligned_crop, find_faces
from face_parser.labels import LabelScheme

MAX_CORNERS = 120
MIN_POINTS = 8  # fewer tracked corners: no motion estimate (the track is lost)
FB_MAX_ERROR_PX = 1.0  # forward-backward disagreement beyond this drops a corner
CROP_FOLLOW = 0.5  # share of the parsed (aligned) crop taken each frame; the rest is the moved crop
EMA_ALPHA = 0.3  # share of the new matte in a steady pixel
EMPTY_RETRY = 5  # after a search that found no face, frames until the next (a search costs several frames)
JUMP = 0.4  # a pixel whose new matte differs by more than this from the warped one moves faster, at 1 fully


def estimate_motion(prev_gray: np.ndarray, gray: np.ndarray, mask_hw: np.ndarray | None = None) -> np.ndarray | None:
    """The ``(2, 3)`` float64 similarity taking ``prev_gray`` points to ``gray`` (uint8 ``(H, W)``), or None.

    ``mask_hw`` (uint8, non-zero where to look) keeps the corners on the faces.
    """
    corners = cv2.goodFeaturesToTrack(prev_gray, MAX_CORNERS, 0.01, 5, mask=mask_hw, blockSize=5)
    if corners is None or len(corners) < MIN_POINTS:
        return None
    ahead, status, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, corners, corners.copy(), winSize=(21, 21), maxLevel=3)
    back, status_back, _ = cv2.calcOpticalFlowPyrLK(gray, prev_gray, ahead, ahead.copy(), winSize=(21, 21), maxLevel=3)
    error = np.linalg.norm((back - corners).reshape(-1, 2), axis=1)
    good = (status.ravel() == 1) & (status_back.ravel() == 1) & (error < FB_MAX_ERROR_PX)
    if good.sum() < MIN_POINTS:
        return None
    matrix, _ = cv2.estimateAffinePartial2D(corners[good], ahead[good], method=cv2.RANSAC,
                                            ransacReprojThreshold=2.0)
    return matrix


def move_crop(crop: Crop, motion: np.ndarray) -> Crop:
    """``crop`` carried by the similarity ``motion`` (``(2, 3)``)."""
    cx, cy = motion @ np.array([crop.cx, crop.cy, 1.0])
    scale = math.sqrt(abs(np.linalg.det(motion[:, :2])))
    turn = math.atan2(motion[1, 0], motion[0, 0])
    return Crop(float(cx), float(cy), crop.side * scale, crop.angle + turn)


def move_face(face: Face, motion: np.ndarray) -> Face:
    x, y, w, h = face.box
    cx, cy = motion @ np.array([x + w / 2, y + h / 2, 1.0])
    scale = math.sqrt(abs(np.linalg.det(motion[:, :2])))
    box = (round(cx - w * scale / 2), round(cy - h * scale / 2), round(w * scale), round(h * scale))
    return Face(box, face.score, move_crop(face.crop, motion))


def mix_crops(old: Crop, new: Crop, share: float) -> Crop:
    """``old`` moved ``share`` of the way to ``new`` (angle along the shorter turn)."""
    turn = (new.angle - old.angle + math.pi) % (2 * math.pi) - math.pi
    return Crop(old.cx + share * (new.cx - old.cx), old.cy + share * (new.cy - old.cy),
                old.side + share * (new.side - old.side), old.angle + share * turn)


def _inside(crop: Crop, box: Sequence[int]) -> bool:
    x, y, w, h = box[:4]
    return x <= crop.cx <= x + w and y <= crop.cy <= y + h


class FaceTracker:
    """Per stream: the faces to parse in each frame, found by the detector or carried by the motion."""

    def __init__(self, detector: FaceDetector, max_faces: int = 16, detect_every: int = 15):
        self.detector, self.max_faces, self.detect_every = detector, max_faces, detect_every
        self.faces: list[Face] = []
        self.motion: np.ndarray | None = None  # this frame's, from the previous one (None: unknown)
        self.detections = 0
        self._prev_gray: np.ndarray | None = None
        self._since_detect = 0
        self._found_none = False

    def observe(self, frame_hwc: np.ndarray) -> np.ndarray | None:
        """Set and return :attr:`motion`, from the previous frame to this one (``(H, W, 3)`` uint8 RGB)."""
        gray = cv2.cvtColor(frame_hwc, cv2.COLOR_RGB2GRAY)
        prev = self._prev_gray
        same_size = prev is not None and prev.shape == gray.shape
        self.motion = (estimate_motion(prev, gray, self._face_mask(gray.shape)) if prev is not None and same_size
                       else None)
        self._prev_gray = gray
        return self.motion

    def step(self, frame_hwc: np.ndarray) -> list[Face]:
        """The faces of this frame (``(H, W, 3)`` uint8 RGB), to crop and parse; sets :attr:`motion`."""
        self.observe(frame_hwc)
        tracked = [move_face(f, self.motion) for f in self.faces] if self.motion is not None else []
        self._since_detect += 1
        if tracked and self._since_detect < self.detect_every:
            self.faces = tracked
        elif not tracked and self._found_none and self._since_detect < EMPTY_RETRY:
            self.faces = []  # nobody in front of the camera: do not search every frame
        else:
            self.faces = self._detect(frame_hwc, tracked)
            self._found_none = not self.faces
        return self.faces

    def _detect(self, frame_hwc: np.ndarray, tracked: list[Face]) -> list[Face]:
        """Detected faces, each keeping its tracked crop where one lies inside it; tracks not re-found stay."""
        self.detections += 1
        self._since_detect = 0
        found = find_faces(frame_hwc, self.detector, self.max_faces)
        kept = list(tracked)
        for face in found:
            if not any(_inside(t.crop, face.box) for t in tracked):
                kept.append(face)
        return sorted(kept, key=lambda f: (f.box[0], f.box[1]))[: self.max_faces]

    def _face_mask(self, shape: tuple[int, int]) -> np.ndarray | None:
        """Where to track corners: inside the faces' crops (None: the whole frame, when no face is known)."""
        if not self.faces:
            return None
        mask = np.zeros(shape, np.uint8)
        for face in self.faces:
            x0, y0, x1, y1 = face.crop.bounds()
            mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 255
        return mask

    def update(self, scores: Sequence[torch.Tensor], labels: LabelScheme) -> None:
        """After the forward pass: nudge each crop towards its parsed framing; drop faces whose eyes or mouth
        were not found (the next frame runs the detector if none is left)."""
        kept = []
        for face, scores_khw in zip(self.faces, scores, strict=True):
            better = aligned_crop(scores_khw, face.crop, labels)
            if better is not None:
                kept.append(replace(face, crop=mix_crops(face.crop, better, CROP_FOLLOW)))
        self.faces = kept


class MatteSmoother:
    """Motion-compensated exponential moving average of ``{"lips": (H, W), "hair": (H, W)}`` float32 mattes."""

    def __init__(self, alpha: float = EMA_ALPHA, jump: float = JUMP):
        self.alpha, self.jump = alpha, jump
        self._state: dict[str, np.ndarray] = {}

    def reset(self) -> None:
        self._state = {}

    def __call__(self, mattes: dict[str, np.ndarray], motion: np.ndarray | None) -> dict[str, np.ndarray]:
        """The smoothed mattes; ``motion`` takes the previous frame to this one (None: start afresh)."""
        out = {}
        for name, matte in mattes.items():
            prev = self._state.get(name)
            if motion is None or prev is None or prev.shape != matte.shape:
                out[name] = matte
                continue
            height, width = matte.shape
            warped = cv2.warpAffine(prev, motion, (width, height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            diff = matte - warped
            alpha = self.alpha + (1 - self.alpha) * np.clip((np.abs(diff) - self.jump) / (1 - self.jump), 0, 1)
            smooth = warped + alpha * diff
            smooth[smooth < 1 / 255] = 0.0  # the tail of a moved matte leaves no faint tint behind
            out[name] = smooth.astype(np.float32)
        self._state = out
        return out
