"""model_training.evaluate_faces: comparing face pipelines on the faces that all of them find."""

from __future__ import annotations

import numpy as np

from face_parser.faces import Crop, Face
from model_training.evaluate_faces import Canvas, common_faces_f1

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
