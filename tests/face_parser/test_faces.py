"""face_parser.faces on its own: the Haar detector on drawn and real photos, crops, landmark alignment, paste-back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from face_parser.faces import (
    Crop,
    Face,
    HaarFaceDetector,
    align_faces,
    aligned_crop,
    box_crop,
    crop_face,
    face_label_map,
    find_faces,
    paste_probabilities,
    suppress_overlaps,
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


@pytest.fixture(scope="module")
def detector() -> HaarFaceDetector:
    return HaarFaceDetector()


def blocky_photo(height=300, width=400, seed=0) -> np.ndarray:
    """Random 10-px blocks: resampling errors show, and no block looks like a face."""
    cells = np.random.default_rng(seed).integers(0, 256, (height // 10, width // 10, 3), dtype=np.uint8)
    return np.ascontiguousarray(cells.repeat(10, axis=0).repeat(10, axis=1))


def one_hot_scores(class_id: int, n_classes: int = 3, size: int = 8) -> torch.Tensor:
    scores = torch.zeros(n_classes, size, size)
    scores[class_id] = 1.0
    return scores


# --- detection ---------------------------------------------------------------------------------------------------

def test_haar_finds_each_drawn_face_in_a_group_photo_left_to_right(detector):
    canvas, _ = face_canvas()
    faces = find_faces(canvas, detector)
    assert len(faces) == 3
    for face, x in zip(faces, FACE_X, strict=True):
        bx, by, bw, bh = face.box
        assert x <= bx and bx + bw <= x + 200 and 60 <= by and by + bh <= 260  # inside its own face
        assert face.crop.angle == 0.0 and face.score > 0


def test_haar_finds_the_face_in_a_real_photo(detector):
    data = pytest.importorskip("skimage.data")
    photo = data.astronaut()  # public domain (NASA), 512x512, one face around x 180-270, y 70-160
    boxes = detector(photo)
    assert len(boxes) == 1
    x, y, w, h, _ = boxes[0]
    assert 150 < x + w / 2 < 260 and 80 < y + h / 2 < 160 and 70 < w < 130


@pytest.mark.parametrize("shape", [(300, 400, 3), (1, 2000, 3), (2000, 1, 3), (10, 10, 3)])
def test_no_face_in_a_plain_or_degenerate_photo(detector, shape):
    assert detector(np.full(shape, 128, np.uint8)) == []


def test_overlapping_boxes_keep_the_most_confident():
    boxes = [(0, 0, 100, 100, 5.0), (10, 10, 80, 80, 9.0), (300, 0, 50, 50, 1.0)]
    assert suppress_overlaps(boxes) == [(10, 10, 80, 80, 9.0), (300, 0, 50, 50, 1.0)]


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


# --- paste-back --------------------------------------------------------------------------------------------------

def test_pixels_outside_every_face_are_background():
    probs, owner = paste_probabilities([one_hot_scores(1)], [Crop(250, 150, 200)], (300, 400))
    inside = (slice(50, 250), slice(150, 350))
    assert (probs[1][inside] == 1).all() and (owner[inside] == 0).all()
    outside = torch.ones(300, 400, dtype=torch.bool)
    outside[inside] = False
    assert (probs[0][outside] == 1).all() and (probs[1][outside] == 0).all() and (owner[outside] == -1).all()


def test_where_faces_overlap_the_surer_face_owns_the_pixel():
    unsure = torch.tensor([0.6, 0.4, 0.0])[:, None, None].expand(3, 8, 8)  # person probability 0.4
    sure = torch.tensor([0.1, 0.0, 0.9])[:, None, None].expand(3, 8, 8)    # person probability 0.9
    crops = [Crop(100, 100, 100), Crop(150, 100, 100)]
    probs, owner = paste_probabilities([unsure, sure], crops, (200, 250))
    assert owner[100, 75] == 0 and owner[100, 125] == 1 and owner[100, 180] == 1  # 100-150 is shared
    assert probs[2][100, 125] == pytest.approx(0.9) and probs[1][100, 125] == 0


def test_a_rotated_face_covers_its_rotated_square():
    _, owner = paste_probabilities([one_hot_scores(1)], [Crop(200, 200, 100, math.pi / 4)], (400, 400))
    assert int((owner == 0).sum()) == pytest.approx(100 * 100, rel=0.02)
    assert owner[200, 200 + 69] == 0 and owner[200 + 40, 200 + 40] == -1  # a diamond: corners on the axes


def test_chosen_classes_and_a_smaller_answer():
    probs, owner = paste_probabilities([one_hot_scores(2)], [Crop(100, 100, 100)], (200, 200),
                                       out_size=(100, 100), class_ids=[2])
    assert probs.shape == (1, 100, 100) and owner.shape == (100, 100)
    assert probs[0, 50, 50] == 1 and probs[0, 5, 5] == 0


def test_label_map_puts_each_face_back_in_place():
    crops = [Crop(100, 100, 80), Crop(300, 120, 60)]
    labels = face_label_map([one_hot_scores(1), one_hot_scores(2)], crops, (240, 400)).numpy()
    assert labels.dtype == np.uint8 and labels.shape == (240, 400)
    assert (labels[62:138, 62:138] == 1).all() and (labels[92:148, 272:328] == 2).all()
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    assert (face_label_map([], [], (240, 400)).numpy() == 0).all()
