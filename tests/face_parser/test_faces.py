"""face_parser.faces on its own: framing from boxes and landmarks, crops, parse-based re-alignment."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from face_parser.detectors import Detection
from face_parser.faces import (
    LANDMARK_FRAME,
    Crop,
    Face,
    LandmarkFrame,
    align_faces,
    aligned_crop,
    apart,
    box_crop,
    celeba_crop,
    crop_face,
    find_faces,
    frame_offset,
    landmark_crop,
    landmark_features,
    offset_crop,
)
from face_parser.labels import CELEBAMASK_HQ_SCHEME as LABELS
from face_parser.preprocess import resize_rgb
from tests.conftest import draw_face

FACE_X = (30, 300, 570)  # where face_canvas puts its three 200-px faces (top at 60)


def face_canvas(background=(90, 160, 90)) -> tuple[np.ndarray, np.ndarray]:
    """Three draw_face faces side by side on a plain 800x320 photo, with their label map."""
    canvas = np.full((320, 800, 3), background, np.uint8)
    truth = np.zeros((320, 800), np.uint8)
    for seed, x in enumerate(FACE_X, start=1):
        image, mask = draw_face(200, seed=seed)
        canvas[60:260, x:x + 200], truth[60:260, x:x + 200] = image, mask
    return canvas, truth


def blocky_photo(height=300, width=400, seed=0) -> np.ndarray:
    """Random 10-px blocks: resampling errors show, and no block looks like a face."""
    cells = np.random.default_rng(seed).integers(0, 256, (height // 10, width // 10, 3), dtype=np.uint8)
    return np.ascontiguousarray(cells.repeat(10, axis=0).repeat(10, axis=1))


def one_hot_scores(class_id: int, n_classes: int = 3, size: int = 8) -> torch.Tensor:
    scores = torch.zeros(n_classes, size, size)
    scores[class_id] = 1.0
    return scores


# --- framing -----------------------------------------------------------------------------------------------------

def test_box_crop_frames_the_box_like_a_training_face():
    crop = box_crop((100, 200, 60, 60))
    assert crop.side == pytest.approx(60 * 1.55)
    assert crop.cx == 130 and crop.cy == pytest.approx(230 - 0.08 * 60)  # the frame centre sits above the box's


# --- crops -------------------------------------------------------------------------------------------------------

def test_an_upright_crop_is_the_photo_region_resized_like_training():
    photo = blocky_photo()
    got = crop_face(photo, Crop(250, 150, 200), 100).astype(int)
    expected = resize_rgb(np.ascontiguousarray(photo[50:250, 150:350]), 100).astype(int)
    assert np.abs(got - expected).mean() < 1.0


def test_a_rotated_crop_turns_the_region():
    photo = blocky_photo()
    upright = crop_face(photo, Crop(250, 150, 200), 100).astype(int)
    quarter = crop_face(photo, Crop(250, 150, 200, math.pi / 2), 100).astype(int)
    assert np.abs(quarter - np.rot90(upright, 1)).mean() < 1.0  # the crop's x axis points down the photo


def test_a_crop_past_the_edge_repeats_the_edge_pixels():
    photo = np.zeros((100, 100, 3), np.uint8)
    photo[:, :25] = 200
    crop = crop_face(photo, Crop(0, 50, 100), 50)  # x from -50 to 50: its left half lies outside the photo
    assert (crop[:, :30] == 200).all() and (crop[:, -10:] == 0).all()


# --- landmark alignment -------------------------------------------------------------------------------------------

def landmark_scores(points: dict[str, tuple[float, float]], size: int = 64) -> torch.Tensor:
    """Scores with a blob per named part at ``(x, y)`` in [0, 1] crop coordinates, background elsewhere."""
    scores = torch.zeros(len(LABELS), size, size)
    scores[0] = 0.05
    yy, xx = torch.meshgrid((torch.arange(size) + 0.5) / size, (torch.arange(size) + 0.5) / size, indexing="ij")
    for name, (x, y) in points.items():
        scores[LABELS.id_of(name)] = torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 0.02**2))
    return scores


# eyes and mouth where CelebA-HQ's alignment puts them in its frame
ALIGNED = {"l_eye": (0.375, 0.475), "r_eye": (0.625, 0.475), "mouth": (0.5, 0.725)}


def test_alignment_keeps_a_face_that_is_already_framed_like_training():
    crop = Crop(400, 300, 200)
    new = aligned_crop(landmark_scores(ALIGNED), crop, LABELS)
    assert new.cx == pytest.approx(400, abs=2) and new.cy == pytest.approx(300, abs=2)
    assert new.side == pytest.approx(200, rel=0.03) and abs(new.angle) < 0.01


def test_alignment_follows_a_tilted_and_shifted_face():
    turn = math.radians(20)
    rotate = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    centre = np.array([0.45, 0.52])  # off centre, and 0.9 x the training size
    points = {name: tuple(centre + 0.9 * rotate @ (np.array(p) - 0.5)) for name, p in ALIGNED.items()}
    crop = Crop(400, 300, 200)
    new = aligned_crop(landmark_scores(points), crop, LABELS)
    assert new.angle == pytest.approx(turn, abs=0.02)
    assert new.side == pytest.approx(0.9 * 200, rel=0.03)
    assert new.cx == pytest.approx(300 + 0.45 * 200, abs=2) and new.cy == pytest.approx(200 + 0.52 * 200, abs=2)


def test_without_a_mouth_the_detector_crop_stays():
    scores = landmark_scores({k: v for k, v in ALIGNED.items() if k != "mouth"})
    face = Face((0, 0, 10, 10), 1.0, Crop(400, 300, 200))
    assert aligned_crop(scores, face.crop, LABELS) is None
    assert align_faces([face], [scores], LABELS) == [face]


# --- framing from landmarks ---------------------------------------------------------------------------------------

def aligned_points(crop: Crop) -> np.ndarray:
    """Photo pixels of the eyes and mouth of a face that ``crop`` frames exactly like a training face."""
    return crop.to_photo(np.array([ALIGNED["l_eye"], ALIGNED["r_eye"], ALIGNED["mouth"]]))


@pytest.mark.parametrize("degrees", [0, 20, -45, 45, 135, 180])
def test_celeba_crop_recovers_the_frame_its_landmarks_came_from(degrees):
    crop = Crop(320.5, 210.25, 180, math.radians(degrees))
    eye_a, eye_b, mouth = aligned_points(crop)
    for eyes in ((eye_a, eye_b), (eye_b, eye_a)):  # which eye comes first does not matter
        got = celeba_crop(*eyes, mouth)
        assert (got.cx, got.cy, got.side) == pytest.approx((crop.cx, crop.cy, crop.side), abs=1e-6)
        assert math.remainder(got.angle - crop.angle, 2 * math.pi) == pytest.approx(0, abs=1e-9)


# six BlazeFace-like points of a face in its training frame: eyes, nose tip, mouth centre, ears (not CelebA's)
FACE_POINTS = np.array([[0.39, 0.46], [0.62, 0.475], [0.5, 0.6], [0.51, 0.69], [0.2, 0.52], [0.8, 0.5]])
SIMILARITIES = [Crop(256, 256, 512), Crop(300.5, 120.25, 90, math.radians(35)), Crop(40, 700, 300, math.radians(-45)),
                Crop(1000, 500, 1200, math.radians(180))]


def assert_same_crop(got: Crop, expected: Crop, abs_px: float = 1e-6) -> None:
    assert (got.cx, got.cy, got.side) == pytest.approx((expected.cx, expected.cy, expected.side), abs=abs_px)
    assert math.remainder(got.angle - expected.angle, 2 * math.pi) == pytest.approx(0, abs=1e-9)


def mirrored(points: np.ndarray, width: float = 2000) -> np.ndarray:
    return np.stack([width - points[:, 0], points[:, 1]], axis=1)


def test_to_crop_inverts_to_photo():
    crop = Crop(123.4, 56.7, 89, 0.7)
    uv = np.random.default_rng(0).uniform(-1, 2, (5, 2))
    assert crop.to_crop(crop.to_photo(uv)) == pytest.approx(uv)


@pytest.mark.parametrize("truth", SIMILARITIES)
def test_offset_crop_undoes_frame_offset(truth):
    crop = Crop(310, 190, 170, math.radians(5))
    assert_same_crop(offset_crop(crop, frame_offset(crop, truth)), truth)


def test_landmark_features_do_not_depend_on_where_the_face_is_and_mirror_with_it():
    def features(points):
        return landmark_features(points, celeba_crop(points[0], points[1], points[3]))

    first = features(SIMILARITIES[0].to_photo(FACE_POINTS))
    for truth in SIMILARITIES[1:]:
        assert features(truth.to_photo(FACE_POINTS)) == pytest.approx(first, abs=1e-9)
    # in a mirror image the photo-left eye and ear are the other ones: the features mirror, pairs kept in order
    swap = [2, 3, 0, 1, 4, 5, 6, 7, 10, 11, 8, 9]
    flip = np.tile([-1.0, 1.0], 6)
    assert features(mirrored(SIMILARITIES[1].to_photo(FACE_POINTS))) == pytest.approx(first[swap] * flip, abs=1e-9)


@pytest.mark.parametrize("truth", SIMILARITIES + [Crop(500, 400, 256, math.radians(-20))])
def test_the_correction_maps_a_turned_scaled_moved_face_back_onto_its_frame(truth):
    canonical = SIMILARITIES[0]
    points = canonical.to_photo(FACE_POINTS)
    uncorrected = celeba_crop(points[0], points[1], points[3])
    frame = LandmarkFrame(np.zeros((4, 12)), frame_offset(uncorrected, canonical))  # knows this one face
    assert abs(uncorrected.side / canonical.side - 1) > 0.05  # celeba_crop alone misses it
    assert_same_crop(landmark_crop(truth.to_photo(FACE_POINTS), frame), truth, abs_px=1e-6 * truth.side)


def test_landmark_crop_uses_the_weights_on_the_features():
    points = SIMILARITIES[1].to_photo(FACE_POINTS)
    uncorrected = landmark_crop(points, None)
    weights = np.zeros((4, 12))
    weights[2, 6] = 1.0  # log side ratio = the mouth's x in the crop ...
    frame = LandmarkFrame(weights, np.array([0.01, -0.02, 0.0, 0.03]))
    mouth_u = uncorrected.to_crop(points[3:4])[0, 0] - 0.5
    assert_same_crop(landmark_crop(points, frame), offset_crop(uncorrected, [0.01, -0.02, mouth_u, 0.03]))


def test_the_shipped_correction_loads_and_was_measured(tmp_path):
    assert LANDMARK_FRAME.weights.shape == (4, 12) and LANDMARK_FRAME.bias.shape == (4,)
    assert np.isfinite(LANDMARK_FRAME.weights).all() and np.isfinite(LANDMARK_FRAME.bias).all()
    for split in ("validation_aligned", "validation_warped"):  # the fit beats celeba_crop alone on held-out photos
        measured = LANDMARK_FRAME.fit[split]
        assert measured["fit"]["angle_deg"] < measured["celeba_crop"]["angle_deg"]
        assert measured["fit"]["side_pct"] < measured["celeba_crop"]["side_pct"]
    path = tmp_path / "frame.json"
    path.write_text('{"weights": [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.5]], "bias": [0.1]}')
    assert LandmarkFrame.load(path).weights.shape == (1, 12) and LandmarkFrame.load(path).fit == {}


def test_faces_are_apart_when_their_crops_are_not_centred_on_each_other():
    face, on_it, beside, large = (Face((0, 0, 1, 1), 0.9, Crop(cx, 100, side)) for cx, side in
                                  ((100, 100), (125, 100), (140, 100), (140, 200)))
    assert not apart(on_it, [face])  # 25 px: under 0.3 of the side
    assert apart(beside, [face]) and apart(beside, [])  # 40 px: another face
    assert not apart(large, [face])  # 40 px of a 200 px side


def test_find_faces_frames_by_landmarks_when_the_detector_gives_them():
    crop = Crop(300, 200, 150, math.radians(-20))
    eye_a, eye_b, mouth = aligned_points(crop)
    landmarks = np.array([eye_a, eye_b, (eye_a + eye_b) / 2, mouth, eye_a, eye_b])
    found = [Detection((240.0, 140.0, 120.0, 120.0), 0.9, landmarks), (20, 30, 60, 60, 0.8)]
    boxed, landmarked = find_faces(np.zeros((400, 600, 3), np.uint8), lambda image: found)  # left to right
    assert landmarked.crop == landmark_crop(landmarks) and len(landmarked.landmarks) == 6
    assert boxed.crop == box_crop((20, 30, 60, 60)) and boxed.landmarks is None and boxed.box == (20, 30, 60, 60)


@pytest.mark.parametrize("degrees", [0, 30, -45])
@pytest.mark.parametrize("u, v", [(0.3, 0.6), (0.7, 0.25)])
def test_crop_pixels_sit_where_the_crop_geometry_says(degrees, u, v):
    """A dot at crop coordinates (u, v), put in the photo through ``Crop.to_photo``, is found at (u, v) in the crop."""
    crop, size = Crop(210, 160, 120, math.radians(degrees)), 96
    photo = np.zeros((320, 400, 3), np.uint8)
    x, y = crop.to_photo(np.array([[u, v]]))[0]
    # OpenCV: centres at integers
    cv2.circle(photo, (round((x - 0.5) * 16), round((y - 0.5) * 16)), 4 * 16, (255, 255, 255), -1, shift=4)
    weight = crop_face(photo, crop, size)[..., 0].astype(float)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres, in crop pixels
    centre = (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()
    assert centre == pytest.approx((u * size, v * size), abs=0.25)
