"""benchmarks.model_speed on the tiny model: every batch size gets a forward and a preprocessing figure, with or
without test-time augmentation."""

from __future__ import annotations

from benchmarks import model_speed


def test_model_speed_reports_each_batch_with_and_without_test_time_augmentation(tiny_model_dir):
    extra = {(False, ()): [], (True, ()): ["--flip"], (True, (32, 96)): ["--flip", "--tta_sizes", "32", "96"]}
    runs = {key: model_speed.main(["--model", tiny_model_dir, "--batches", "1", "2", "--repeats", "2",
                                   "--dtype", "float32", *args]) for key, args in extra.items()}
    for (flip, sizes), result in runs.items():
        assert result["flip"] is flip and result["tta_sizes"] == list(sizes)
        assert result["dtype"] == "torch.float32" and result["device"] == "cpu"
        assert set(result["ms_per_image"]) == set(result["preprocess_ms_per_image"]) == {1, 2}
        assert all(v > 0 for v in result["ms_per_image"].values())
        assert all(v >= 0 for v in result["preprocess_ms_per_image"].values())  # may round to 0 at 64 px
