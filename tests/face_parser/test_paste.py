"""face_parser.paste: each face's parsing back into the photo, against a per-pixel bilinear reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from face_parser.faces import Crop
from face_parser.paste import face_label_map, paste_probabilities
from tests.face_parser.test_faces import one_hot_scores


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


def reference_label_map(scores, crops, photo_size) -> np.ndarray:
    """Per photo pixel: bilinear class scores of each crop (``grid_sample``), the surer face wins, argmax."""
    height, width = photo_size
    yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    labels, best = torch.zeros(photo_size, dtype=torch.long), torch.zeros(photo_size)
    for scores_khw, crop in zip(scores, crops, strict=False):
        ex, ey = crop.axes()
        dx, dy = xx - crop.cx, yy - crop.cy
        u = (dx * ex[0] + dy * ex[1]) * 2 / crop.side
        v = (dx * ey[0] + dy * ey[1]) * 2 / crop.side
        grid = torch.stack([u, v], dim=-1).float()[None]
        sampled = F.grid_sample(scores_khw[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        person = torch.where((u.abs() <= 1) & (v.abs() <= 1), 1 - sampled[0] / sampled.sum(0), torch.zeros(()))
        wins = person > best
        best[wins], labels[wins] = person[wins], sampled.argmax(0)[wins]
    return labels.numpy()


def smooth_scores(seed: int, n_classes: int = 6, size: int = 16) -> torch.Tensor:
    """Positive class scores with blobs of each class, like a low-resolution parsing."""
    coarse = torch.rand(n_classes, 4, 4, generator=torch.Generator().manual_seed(seed)) ** 4
    return F.interpolate(coarse[None], size=(size, size), mode="bicubic", align_corners=False)[0].clamp_min(0) + 0.01


@pytest.mark.parametrize("degrees", [0, 25, -40])
def test_label_map_matches_the_per_pixel_reference(degrees):
    crops = [Crop(110.3, 95.7, 120, math.radians(degrees)), Crop(190, 120, 90, math.radians(-degrees / 2))]
    scores = [smooth_scores(1), smooth_scores(2)]
    got = face_label_map(scores, crops, (200, 260)).numpy()
    expected = reference_label_map(scores, crops, (200, 260))
    assert (got == expected).mean() > 0.98  # boundaries may move by half a pixel (nearest copy of the crop's map)
    assert set(np.unique(got)) == set(np.unique(expected))


def test_a_large_photo_is_labelled_at_max_side_then_enlarged():
    crops, scores = [Crop(400, 300, 300)], [smooth_scores(3)]
    small = face_label_map(scores, [Crop(100, 75, 75)], (150, 200)).numpy()
    big = face_label_map(scores, crops, (600, 800), max_side=200).numpy()
    assert big.shape == (600, 800) and (big[::4, ::4] == small).mean() > 0.99
