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


def test_other_input_sizes_take_turns_and_are_reported_against_the_first(tiny_model_dir):
    result = model_speed.main(["--model", tiny_model_dir, "--batches", "1", "--repeats", "2", "--dtype", "float32",
                               "--input_sizes", "64", "128", "--rounds", "2"])
    by_size = result["by_input_size"]
    assert set(by_size) == {64, 128}
    assert by_size[64][1] == {"ms_per_image": result["ms_per_image"][1], "against_first": 1.0}
    assert by_size[128][1]["ms_per_image"] > 0 and by_size[128][1]["against_first"] > 0
