"""model_training.evaluate: label maps at the ground truth's size (with and without flip and extra input sizes),
and the report (the test-time augmentation it was made with):
intervals, each photo's confusion matrix, a paired comparison with an earlier evaluation; an overlay grid of
photos of different sizes; a folder that is not a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_training.evaluate import main, predict_label_maps
from tests.conftest import draw_face, write_cartoon_set


@pytest.mark.parametrize(("flip", "extra_sizes"), [(False, ()), (True, ()), (True, (32, 96))])
def test_label_maps_keep_the_photo_size_and_the_label_ids_with_any_test_time_augmentation(tiny_parser, flip,
                                                                                         extra_sizes):
    images = [np.random.default_rng(seed).integers(0, 256, size=(96, 128, 3), dtype=np.uint8) for seed in (1, 2)]
    maps = predict_label_maps(tiny_parser, images, (96, 128), flip, extra_sizes)
    assert maps.shape == (2, 96, 128) and maps.dtype == np.uint8 and maps.max() < len(tiny_parser.labels)


def test_main_reports_intervals_and_compares_with_an_earlier_evaluation(tiny_model_dir, tmp_path):
    write_cartoon_set(tmp_path / "data", 10)
    common = ["--model", tiny_model_dir, "--data_dir", str(tmp_path / "data"), "--val_count", "6",
              "--device", "cpu"]
    first = main([*common, "--out", str(tmp_path / "first")])
    written = json.loads((tmp_path / "first" / "report.json").read_text())
    for name, (low, high) in written["ci95"].items():
        assert low <= written[name] <= high, name
    matrices = np.load(tmp_path / "first" / "per_image_confusion.npz")["matrices"]
    assert matrices.shape == (6, 19, 19) and matrices.sum() == 6 * 96 * 96
    np.testing.assert_array_equal(matrices, first["per_image_confusion"])
    again = main([*common, "--out", str(tmp_path / "again"), "--paired_with",
                  str(tmp_path / "first" / "per_image_confusion.npz")])
    assert again["paired_with"]["per_image_f"] == {"difference": 0.0, "low": 0.0, "high": 0.0}
    with pytest.raises(SystemExit, match="ground truths differ"):  # the same count of other photos
        main([*common, "--split_seed", "1", "--out", str(tmp_path / "other"), "--paired_with",
              str(tmp_path / "first" / "per_image_confusion.npz")])
    with pytest.raises(SystemExit, match="test split of .* is empty"):  # no --test_count: nothing held out
        main([*common, "--split", "test", "--out", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="--data_dir .*no_data"):  # a dataset error names the argument
        main([*common[:2], "--data_dir", str(tmp_path / "no_data"), "--out", str(tmp_path / "none")])
    with pytest.raises(FileNotFoundError):  # before any photo is parsed
        main([*common, "--out", str(tmp_path / "none"), "--paired_with", str(tmp_path / "missing.npz")])
    assert (written["flip"], written["tta_sizes"]) == (False, [])
    scaled = main([*common, "--out", str(tmp_path / "scaled"), "--flip", "--tta_sizes", "32", "96"])
    assert (scaled["flip"], scaled["tta_sizes"]) == (True, [32, 96])
    assert not np.array_equal(scaled["per_image_confusion"], matrices)


def test_photos_of_different_sizes_make_overlay_rows_of_one_height(tiny_model_dir, tmp_path):
    """LaPa's photos, or any folder's, differ in size: each row is scaled to one height, narrower rows padded."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i, (height, width) in enumerate([(96, 96), (64, 128), (160, 80), (72, 72)]):
        image, mask = draw_face(max(height, width), seed=i)
        Image.fromarray(image[:height, :width]).save(data / "images" / f"{i}.png")
        Image.fromarray(mask[:height, :width]).save(data / "masks" / f"{i}.png")
    main(["--model", tiny_model_dir, "--data_dir", str(data), "--val_count", "3", "--split_seed", "0",
          "--device", "cpu", "--out", str(tmp_path / "eval")])  # validation: photos 0, 1, 2
    with Image.open(tmp_path / "eval" / "overlays.png") as grid:
        assert grid.size == (3 * 2 * 256, 3 * 256)  # as wide as the widest row: a photo twice as wide as high


def test_a_trainer_checkpoint_is_refused_with_what_to_load_instead(tiny_model_dir, tmp_path):
    """A Trainer checkpoint has the weights but not the preprocessing: a message, not a traceback."""
    checkpoint = tmp_path / "run" / "checkpoint-3"
    checkpoint.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_model_dir) / name, checkpoint / name)
    with pytest.raises(SystemExit, match=r"checkpoint-3 has no preprocessor_config.json.*run folder"):
        main(["--model", str(checkpoint), "--data_dir", str(tmp_path / "data"), "--device", "cpu"])
