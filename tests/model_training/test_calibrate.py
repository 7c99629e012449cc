"""model_training.calibrate: the grid search's shortcut against a direct count, the biases it fits (an
under-scored class gets its score back, mirror pairs share one), the cross-fitted estimate, and ``main``
writing biases that ``FaceParser`` then applies."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from face_parser.labels import CELEBAMASK_HQ_SCHEME as LABELS
from face_parser.modeling import FaceParser
from model_training.calibrate import (
    GRID,
    REACH,
    bias_groups,
    contested_part,
    cross_fitted,
    fit_bias,
    grid_matrices,
    main,
    matrices_with,
    objective,
    stack_parts,
)
from model_training.metrics import IGNORE_INDEX
from tests.conftest import write_cartoon_set

HAT, L_EYE, R_EYE = LABELS.id_of("hat"), LABELS.id_of("l_eye"), LABELS.id_of("r_eye")


def noisy_scores(photos: int, under: dict[int, float], seed: int = 0, size: int = 32):
    """Random blocky masks and log scores that favour the true class by 2 (plus noise), with the classes in
    ``under`` scored that much lower everywhere: what a model that under-predicts them looks like."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(photos):
        truth = np.kron(rng.integers(0, len(LABELS), size=(size // 4, size // 4)), np.ones((4, 4), dtype=np.int64))
        truth[0, 0] = IGNORE_INDEX
        log = rng.normal(0.0, 1.0, size=(len(LABELS), size, size))
        ids = np.minimum(truth, len(LABELS) - 1)[None]
        np.put_along_axis(log, ids, np.take_along_axis(log, ids, axis=0) + 2.0, axis=0)
        for class_id, shift in under.items():
            log[class_id] -= shift
        parts.append(contested_part(torch.from_numpy(log), torch.from_numpy(truth)))
    return stack_parts(parts)


def direct_matrices(logs_nkhw: list[torch.Tensor], truths_nhw: list[torch.Tensor], bias: np.ndarray) -> np.ndarray:
    """Every pixel's biased argmax, counted: what the contested pixels and the grid's shortcut stand for."""
    out = []
    for log, truth in zip(logs_nkhw, truths_nhw, strict=True):
        pred, keep = (log + torch.as_tensor(bias)[:, None, None]).argmax(0), truth != IGNORE_INDEX
        out.append(np.bincount(truth[keep] * 19 + pred[keep], minlength=19 * 19).reshape(19, 19))
    return np.stack(out)


def test_settled_pixels_keep_their_label_under_any_biases_on_the_grid():
    """Confident pixels are counted once: with a bias at each end of the grid, the counts are the direct ones."""
    rng = np.random.default_rng(5)
    truths = [torch.from_numpy(rng.integers(0, 19, size=(16, 16))) for _ in range(2)]
    logs = [torch.from_numpy(rng.normal(0, 3 * REACH, size=(19, 16, 16))).float() for _ in range(2)]
    pixels = stack_parts([contested_part(log, truth) for log, truth in zip(logs, truths, strict=True)])
    assert 0 < len(pixels.truths) < 2 * 256
    for bias in (np.where(np.arange(19) % 2, GRID.max(), GRID.min()), np.zeros(19)):
        bias[0] = 0
        np.testing.assert_array_equal(matrices_with(pixels, bias), direct_matrices(logs, truths, bias))


def test_every_grid_value_counts_as_the_direct_argmax_would():
    pixels = noisy_scores(3, {HAT: 1.0})
    bias = np.random.default_rng(1).choice(GRID, size=len(LABELS))
    bias[0] = 0
    for group in ([L_EYE, R_EYE], [HAT]):
        grid = grid_matrices(pixels, bias, group)
        for j in (0, 7, len(GRID) - 1):
            direct = bias.copy()
            direct[group] = GRID[j]
            np.testing.assert_array_equal(grid[j], matrices_with(pixels, direct))


def test_mirror_pairs_share_a_group_and_background_has_none():
    groups = bias_groups(LABELS)
    assert [L_EYE, R_EYE] in groups and [HAT] in groups
    assert sorted(i for g in groups for i in g) == list(range(1, len(LABELS)))


def test_an_under_scored_class_gets_its_score_back_and_the_objective_rises():
    pixels = noisy_scores(6, {HAT: 1.5, L_EYE: 1.0, R_EYE: 1.0})
    bias = fit_bias(pixels, LABELS)
    assert 0.75 <= bias[HAT] <= 2.5
    assert bias[L_EYE] == bias[R_EYE] > 0
    assert bias[0] == 0
    raw = matrices_with(pixels, np.zeros(len(LABELS)))
    assert objective(matrices_with(pixels, bias)) > objective(raw) + 0.01


def test_cross_fitting_scores_each_photo_with_biases_fit_on_the_other_half():
    pixels = noisy_scores(6, {HAT: 1.5})
    held_out = cross_fitted(pixels, LABELS)
    assert held_out.shape == (6, 19, 19)
    assert held_out.sum() == 6 * (32 * 32 - 1)  # every pixel but the ignored one of each photo
    assert objective(held_out) > objective(matrices_with(pixels, np.zeros(len(LABELS))))
    halves = pixels.subset([4, 1])
    np.testing.assert_array_equal(matrices_with(halves, np.zeros(19)),
                                  matrices_with(pixels, np.zeros(19))[[4, 1]])


def test_main_writes_biases_that_the_parser_applies(tiny_model_dir, tmp_path):
    write_cartoon_set(tmp_path / "data", 8)
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    report = main(["--model", str(folder), "--data_dir", str(tmp_path / "data"), "--val_count", "6",
                   "--device", "cpu", "--out", str(tmp_path / "report"), "--write"])
    written = json.loads((tmp_path / "report" / "report.json").read_text())
    assert written["class_log_bias"] == report["class_log_bias"] and len(written["class_log_bias"]) == 19
    assert set(written["cross_fitted_vs_raw"]) == {"per_image_f", "mean_f1_foreground", "mean_f1_all"}
    parser = FaceParser.load(folder, device="cpu", dtype="float32")
    fitted = np.array([written["class_log_bias"][name] for name in LABELS.names])
    if parser.class_log_bias is None:  # nothing beat the raw model: nothing written
        assert not fitted.any()
    else:
        np.testing.assert_allclose(parser.class_log_bias.numpy(), fitted)


def test_a_folder_that_is_not_a_model_is_named(tmp_path):
    with pytest.raises(SystemExit, match="--model"):
        main(["--model", str(tmp_path / "nowhere"), "--data_dir", str(tmp_path), "--device", "cpu",
              "--out", str(tmp_path / "report")])
