"""Per-image F (the challenge metric) and the pooled 19-class mean."""

from __future__ import annotations

import numpy as np
import pytest

from model_training.metrics import (
    ConfusionMatrix,
    PerImageF,
    bootstrap_intervals,
    image_f1,
    paired_differences,
    summary_figures,
)


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


def random_matrices(rng: np.random.Generator, images: int, classes: int = 4, noise: float = 0.2) -> tuple:
    """Per-image confusion matrices of random label maps and of their truths, with ``noise`` of pixels wrong."""
    matrices, pairs = [], []
    for _ in range(images):
        truth = rng.integers(0, classes, size=(16, 16))
        pred = np.where(rng.random((16, 16)) < noise, rng.integers(0, classes, size=(16, 16)), truth)
        cm = ConfusionMatrix(classes)
        cm.update(truth, pred)
        matrices.append(cm.matrix)
        pairs.append((truth, pred))
    return np.stack(matrices), pairs


def test_summary_figures_unweighted_are_the_reported_ones():
    matrices, pairs = random_matrices(np.random.default_rng(0), 12)
    pooled, per_image = ConfusionMatrix(4), PerImageF(4)
    for truth, pred in pairs:
        pooled.update(truth, pred)
        per_image.update(truth, pred)
    report = pooled.scores(["a", "b", "c", "d"])
    figures = summary_figures(matrices, np.ones((1, 12)))
    assert figures["per_image_f"][0] == pytest.approx(per_image.value, abs=1e-4)
    assert figures["mean_f1_foreground"][0] == pytest.approx(report["mean_f1_foreground"], abs=1e-4)
    assert figures["mean_f1_all"][0] == pytest.approx(report["mean_f1_all"], abs=1e-4)


def test_bootstrap_intervals_hold_the_figure_and_vanish_for_identical_images():
    matrices, _ = random_matrices(np.random.default_rng(1), 30)
    whole = summary_figures(matrices, np.ones((1, 30)))
    intervals = bootstrap_intervals(matrices, rounds=500)
    for name, (low, high) in intervals.items():
        assert low < whole[name][0] < high
    same = np.repeat(matrices[:1], 30, axis=0)
    for low, high in bootstrap_intervals(same, rounds=200).values():
        assert high - low == pytest.approx(0, abs=1e-6)


def test_paired_differences_tell_a_real_gain_from_none():
    rng = np.random.default_rng(2)
    old, _ = random_matrices(rng, 40, noise=0.3)
    better, _ = random_matrices(np.random.default_rng(2), 40, noise=0.2)  # the same truths, fewer mistakes
    same = paired_differences(old, old, rounds=300)
    assert all(d == {"difference": 0.0, "low": 0.0, "high": 0.0} for d in same.values())
    gain = paired_differences(better, old, rounds=300)
    assert all(d["low"] > 0 and d["low"] <= d["difference"] <= d["high"] for d in gain.values())
    with pytest.raises(ValueError, match="same images"):
        paired_differences(better[:10], old, rounds=10)
    other_photos, _ = random_matrices(np.random.default_rng(3), 40, noise=0.3)  # same shape, other truths
    with pytest.raises(ValueError, match="ground truths differ"):
        paired_differences(other_photos, old, rounds=10)
