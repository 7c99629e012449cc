"""model_training.evaluate_faces: comparing face pipelines on the faces that all of them find."""

from __future__ import annotations

import numpy as np
import pytest

from face_parser.faces import Crop, Face
from model_training.evaluate_faces import Canvas, common_faces_f1, paste_face

NAMES = ["background", "skin", "hair"]


def face_at(x0: int, y0: int, side: int) -> Face:
    return Face((x0, y0, side, side), 1.0, Crop(x0 + side / 2, y0 + side / 2, side))


def test_only_faces_every_pipeline_finds_are_compared():
    truth = np.zeros((100, 200), np.uint8)
    truth[10:50, 10:50] = 1  # face A, found by both
    truth[10:50, 110:150] = 2  # face B, found by "more" alone
    canvas = Canvas(np.zeros((100, 200, 3), np.uint8), truth, [(10, 10, 50, 50), (110, 10, 150, 50)], "plain")
    perfect_a = truth.copy()
    perfect_a[:, 100:] = 0
    badly_b = perfect_a.copy()
    badly_b[10:50, 110:150] = 1  # finds B but calls its hair skin: a worse case F1 than missing it
    answers = {"fewer": [(perfect_a, [face_at(10, 10, 40)])],
               "more": [(badly_b, [face_at(10, 10, 40), face_at(110, 10, 40)])]}
    f1 = common_faces_f1([canvas], answers, NAMES)
    assert f1 == {"fewer": 1.0, "more": 1.0}  # on face A, the one both find, both are perfect
    answers["more"][0][0][20:30, 20:30] = 0  # now "more" also misses part of face A
    f1 = common_faces_f1([canvas], answers, NAMES)
    assert f1["fewer"] == 1.0 and f1["more"] < 1.0


@pytest.mark.parametrize("first", [200, 203, 207, 230])
def test_a_pasted_mask_stays_on_its_photo(first):
    """Shrunk together (512 -> 150 px), a stripe of the photo and of its mask keep one centre (within 0.5 px):
    the mask is sampled at pixel centres as the photo is averaged over them."""
    mask = np.zeros((512, 512), np.uint8)
    mask[:, first:first + 16] = 1
    photo = np.repeat(mask[..., None] * 255, 3, axis=2)
    canvas = Canvas(np.zeros((150, 150, 3), np.uint8), np.zeros((150, 150), np.uint8), [], "plain")
    paste_face(canvas, photo, mask, (0, 0, 150, 150), whole=True)
    columns = np.arange(150)
    photo_centre = canvas.image_hwc[..., 0].astype(float).sum(0) @ columns / canvas.image_hwc[..., 0].sum()
    mask_centre = canvas.truth_hw.astype(float).sum(0) @ columns / canvas.truth_hw.sum()
    assert abs(mask_centre - photo_centre) <= 0.5
