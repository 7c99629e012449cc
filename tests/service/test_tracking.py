"""service.tracking on drawn frames: motion estimates, faces carried between detections, steady mattes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from face_parser.faces import Crop
from service.tracking import FaceTracker, MatteSmoother, estimate_motion, mix_crops, move_crop
from tests.conftest import draw_face

SIZE = 240


def textured(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """A face drawn over smooth random texture, so corners exist everywhere."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (size // 8, size // 8, 3))
    texture = np.kron(noise, np.ones((8, 8, 1)))
    face = draw_face(size, seed=seed)[0].astype(np.float32)
    return np.clip(face + 25 * texture, 0, 255).astype(np.uint8)


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    return np.roll(image, (dy, dx), axis=(0, 1))


def gray(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.mean(axis=-1).astype(np.uint8))


def disc(center_x: float, radius: float = 30, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] + 0.5
    return np.clip(radius + 0.5 - np.hypot(xx - center_x, yy - size / 2), 0, 1).astype(np.float32)


def centroid_x(matte: np.ndarray) -> float:
    return float((matte.sum(0) * (np.arange(matte.shape[1]) + 0.5)).sum() / matte.sum())


@pytest.mark.parametrize("dx,dy", [(10, 0), (-6, 4), (0, 0)])
def test_motion_is_found_between_frames(dx, dy):
    image = textured()
    motion = estimate_motion(gray(image), gray(shifted(image, dx, dy)))
    assert motion is not None
    np.testing.assert_allclose(motion[:, 2], [dx, dy], atol=0.5)
    np.testing.assert_allclose(motion[:, :2], np.eye(2), atol=0.02)


def test_a_flat_frame_has_no_motion():
    flat = np.full((SIZE, SIZE), 128, np.uint8)
    assert estimate_motion(flat, flat) is None


def test_crops_move_with_the_motion_and_mix_along_the_short_turn():
    zoom_turn = np.array([[2 * math.cos(0.1), -2 * math.sin(0.1), 5.0], [2 * math.sin(0.1), 2 * math.cos(0.1), -3.0]])
    moved = move_crop(Crop(10.0, 20.0, 50.0, 0.2), zoom_turn)
    assert moved.side == pytest.approx(100.0) and moved.angle == pytest.approx(0.3)
    assert (moved.cx, moved.cy) == pytest.approx(tuple(zoom_turn @ [10.0, 20.0, 1.0]))
    mixed = mix_crops(Crop(0, 0, 10, math.pi - 0.1), Crop(10, 10, 20, -math.pi + 0.1), 0.5)
    assert (mixed.cx, mixed.cy, mixed.side) == (5, 5, 15) and abs(abs(mixed.angle) - math.pi) < 1e-9


class CountingDetector:
    """One fixed face box, shifted with the frame; counts its calls."""

    def __init__(self):
        self.calls, self.dx = 0, 0

    def __call__(self, image):
        self.calls += 1
        return [(70 + self.dx, 60, 100, 120, 10.0)]


def test_the_detector_runs_every_n_frames_and_the_crop_follows_the_face():
    detector = CountingDetector()
    tracker = FaceTracker(detector, detect_every=5)
    image = textured()
    first = tracker.step(image)[0].crop
    for frame in range(1, 10):
        detector.dx = 6 * frame
        faces = tracker.step(shifted(image, 6 * frame, 0))
        assert len(faces) == 1
    assert detector.calls == 2  # frames 0 and 5: the tracked crop was kept at the re-detection
    assert faces[0].crop.cx == pytest.approx(first.cx + 54, abs=1.5)
    assert faces[0].crop.cy == pytest.approx(first.cy, abs=1.5)


def test_a_lost_track_runs_the_detector_at_once():
    detector = CountingDetector()
    tracker = FaceTracker(detector, detect_every=100)
    tracker.step(textured())
    tracker.faces = []  # what update() leaves when the eyes or mouth were not found
    tracker.step(textured())
    assert detector.calls == 2


def test_without_a_face_the_detector_runs_every_few_frames():
    calls = []
    tracker = FaceTracker(lambda image: calls.append(1) or [], detect_every=100)
    for _ in range(11):
        assert tracker.step(textured()) == []
    assert len(calls) == 3  # frames 0, 5 and 10


def test_smoothing_halves_the_flicker_of_a_still_matte():
    rng = np.random.default_rng(0)
    smoother, identity = MatteSmoother(), np.eye(2, 3)
    raw, smooth = [], []
    for _ in range(30):
        noisy = np.clip(disc(120) + rng.normal(0, 0.15, (SIZE, SIZE)).astype(np.float32), 0, 1)
        raw.append(noisy)
        smooth.append(smoother({"lips": noisy}, identity)["lips"])
    def change(seq):
        return np.mean([np.abs(a - b).mean() for a, b in itertools.pairwise(seq[10:])])

    assert change(smooth) < 0.5 * change(raw)


def test_smoothing_does_not_trail_a_moving_matte():
    smoother = MatteSmoother()
    step = np.array([[1.0, 0, 10], [0, 1.0, 0]])
    for frame in range(12):
        out = smoother({"lips": disc(60 + 10 * frame)}, step if frame else None)["lips"]
        assert abs(centroid_x(out) - (60 + 10 * frame)) <= 1.0


def test_smoothing_starts_afresh_without_motion():
    smoother = MatteSmoother()
    smoother({"hair": disc(60)}, None)
    np.testing.assert_array_equal(smoother({"hair": disc(150)}, None)["hair"], disc(150))
