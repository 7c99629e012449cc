"""Per-image F (the challenge metric) and the pooled 19-class mean."""

from __future__ import annotations

import numpy as np
import pytest

from model_training.metrics import ConfusionMatrix, PerImageF, image_f1


def test_image_f1_averages_the_classes_in_the_ground_truth():
    truth = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 2, 1, 1]])  # class 2 is predicted but absent from the truth: not averaged
    assert image_f1(truth, pred, 3) == pytest.approx((2 / 3 + 1.0) / 2)


def test_per_image_f_is_a_mean_over_images_not_over_pixels():
    scores = PerImageF(2)
    scores.update(np.zeros((10, 10), int), np.zeros((10, 10), int))  # perfect: 1.0
    tiny = np.zeros((10, 10), int)
    tiny[0, 0] = 1
    scores.update(tiny, np.zeros((10, 10), int))  # misses a one-pixel part: (F1 bg ~0.995 + 0) / 2
    assert scores.value == pytest.approx((1.0 + (2 * 99 / 199) / 2) / 2, abs=1e-4)
    cm = ConfusionMatrix(2)
    cm.update(np.stack([np.zeros((10, 10), int), tiny]), np.zeros((2, 10, 10), int))
    assert cm.scores(["bg", "a"])["mean_f1_all"] == pytest.approx((2 * 199 / 399 + 0) / 2, abs=1e-4)


def test_ignore_pixels_and_empty_images():
    scores = PerImageF(2)
    scores.update(np.full((4, 4), 255), np.zeros((4, 4), int))
    assert scores.value is None
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 1, 1, 255]), np.array([0, 1, 0, 1]))
    np.testing.assert_allclose(cm.normalised(), [[1, 0], [0.5, 0.5]])
