"""model_training.fit_landmark_frame: warps with a known frame, the ridge fit, the error measures, the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from face_parser.detectors import Detection
from face_parser.faces import Crop, LandmarkFrame, celeba_crop, frame_offset, landmark_crop, landmark_features
from model_training.fit_landmark_frame import errors, fit_ridge, main, sample, warp_photo
from tests.conftest import write_cartoon_set
from tests.face_parser.test_faces import FACE_POINTS


def marked_photo(side: int = 512) -> np.ndarray:
    """Black, with white 12-px squares on the vertical midline at a fifth and four fifths of the height."""
    photo = np.zeros((side, side, 3), np.uint8)
    for v in (0.2, 0.8):
        photo[round(v * side) - 6:round(v * side) + 6, side // 2 - 6:side // 2 + 6] = 255
    return photo


def test_warp_photo_puts_the_photo_where_its_frame_says():
    rng = np.random.default_rng(3)
    for _ in range(4):
        canvas, truth = warp_photo(rng, marked_photo())
        white = canvas.min(axis=2) > 250
        ys, xs = np.nonzero(white)
        for v in (0.2, 0.8):  # on the midline, so where a mirrored photo puts it too
            expected = truth.to_photo(np.array([[0.5, v]]))[0]
            near = np.hypot(xs + 0.5 - expected[0], ys + 0.5 - expected[1]) < 0.1 * truth.side
            assert near.sum() > 0
            assert (xs[near].mean() + 0.5, ys[near].mean() + 0.5) == pytest.approx(tuple(expected), abs=1.0)
        assert abs(math.degrees(truth.angle)) <= 45 and truth.side >= 0.1 * canvas.shape[1] - 1


def synthetic_faces(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Faces whose six points vary in shape around FACE_POINTS, each at a random similarity, framed (the truth)
    from eye and mouth points the detector does not give (each eye a tenth of the way to its ear, the mouth a
    quarter of the nose-to-mouth distance lower): features, offsets and ``(points, truth)`` of each."""
    rows = []
    for _ in range(count):
        place = Crop(*rng.uniform(200, 800, 2), rng.uniform(50, 600), rng.uniform(-math.pi, math.pi))
        points = place.to_photo(FACE_POINTS + rng.normal(0, 0.01, FACE_POINTS.shape))
        eyes = points[:2] + (points[4:] - points[:2]) / 10
        truth = celeba_crop(*eyes, points[3] + (points[3] - points[2]) / 4)
        crop = landmark_crop(points, None)
        rows.append((landmark_features(points, crop), frame_offset(crop, truth), (points, truth)))
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), [r[2] for r in rows]


def test_the_fit_frames_held_out_synthetic_faces_like_their_training_frame():
    rng = np.random.default_rng(0)
    weights, bias = fit_ridge(*synthetic_faces(rng, 400)[:2], alpha=1e-6)
    x, y, faces = synthetic_faces(rng, 50)
    before, after = errors(np.zeros_like(y), y), errors(x @ weights.T + bias, y)
    constant = errors(np.broadcast_to(y.mean(0), y.shape), y)  # the best any global scale, shift and turn can do
    assert before["side_pct"] > 5 and before["angle_deg"] > 0.5  # celeba_crop of these points misses the frame
    assert constant["side_pct"] > 1 and constant["angle_deg"] > 0.3  # and the shape of each face matters
    assert after["side_pct"] < 0.2 and after["angle_deg"] < 0.1 and after["centre_pct"] < 0.1
    frame = LandmarkFrame(weights, bias)
    for points, truth in faces[:5]:  # the same through landmark_crop, in photo pixels
        got = landmark_crop(points, frame)
        assert math.hypot(got.cx - truth.cx, got.cy - truth.cy) < 0.01 * truth.side
        assert got.side == pytest.approx(truth.side, rel=0.01)


def test_errors_are_angle_side_and_centre_of_the_crops_the_offsets_make():
    truth = np.array([[0.0, 0.0, math.log(2.0), 0.0]])  # the true frame is twice the uncorrected crop
    predicted = np.array([[0.02, 0.0, math.log(2.1), math.radians(-3)]])
    assert errors(predicted, truth) == {"angle_deg": 3.0, "side_pct": 5.0, "centre_pct": 1.0}


def test_sample_takes_the_detection_nearest_the_frame():
    truth = Crop(300, 300, 200)
    near = truth.to_photo(FACE_POINTS)
    far = near + 150
    detector = lambda image: [Detection((0, 0, 1, 1), 0.99, far), Detection((0, 0, 1, 1), 0.6, near)]  # noqa: E731
    photo = np.zeros((600, 600, 3), np.uint8)
    features, offset = sample(detector, photo, truth)
    crop = celeba_crop(near[0], near[1], near[3])
    assert features == pytest.approx(landmark_features(near, crop))
    assert offset == pytest.approx(frame_offset(crop, truth))
    assert sample(lambda image: [Detection((0, 0, 1, 1), 0.99, far)], photo, truth) is None  # too far: no sample


def test_main_writes_coefficients_that_load(tmp_path):
    write_cartoon_set(tmp_path / "data", 12, size=512)
    out = tmp_path / "frame.json"
    main(["--data_dir", str(tmp_path / "data"), "--val_count", "2", "--test_count", "2", "--warps", "1",
          "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["fit"]["pairs"] == {"train": 8, "validation": 2}
    assert "--warps 1" in written["fit"]["command"]
    frame = LandmarkFrame.load(out)
    assert frame.weights.shape == (4, 12) and frame.fit["train"]["samples"] > 8
