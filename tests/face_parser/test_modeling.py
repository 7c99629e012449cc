"""face_parser.modeling: the exported folder's files; score_images (with extra input sizes: the log scores
averaged on the largest grid); FaceParser.scores with ``flip`` (the mirrored photos in the same pass, mirrored
back, left and right swapped); deepen_backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from face_parser.labels import CELEBAMASK_HQ_SCHEME
from face_parser.modeling import build_model, deepen_backbone
from face_parser.preprocess import to_pixel_values


def photo(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)


def mirror(scores_bkhw: torch.Tensor, parser) -> torch.Tensor:
    """Scores of the mirrored photo, were the parser perfectly mirror-symmetric."""
    swap = torch.as_tensor(parser.labels.flip_permutation().astype(np.int64))
    return scores_bkhw.flip(-1)[:, swap]


def test_flip_averaged_scores_are_exactly_mirror_symmetric(tiny_parser):
    pixels = to_pixel_values([photo(0), photo(1)], tiny_parser.preprocess)
    mirrored_pixels = pixels.flip(-1)
    flipped = tiny_parser.scores(pixels, flip=True)
    torch.testing.assert_close(tiny_parser.scores(mirrored_pixels, flip=True), mirror(flipped, tiny_parser),
                               rtol=1e-4, atol=1e-5)
    plain = tiny_parser.scores(pixels)  # a random model is far from symmetric on its own
    assert not torch.allclose(tiny_parser.scores(mirrored_pixels), mirror(plain, tiny_parser), atol=1e-3)


def test_flip_averages_the_photo_with_its_mirror(tiny_parser):
    pixels = to_pixel_values([photo(2)], tiny_parser.preprocess)
    expected = (tiny_parser.scores(pixels) + mirror(tiny_parser.scores(pixels.flip(-1)), tiny_parser)) / 2
    torch.testing.assert_close(tiny_parser.scores(pixels, flip=True), expected, rtol=1e-4, atol=1e-5)
    assert tiny_parser.score_images([photo(2)], flip=True)[0].shape == expected.shape[1:]


def test_an_exported_folder_is_readable_by_other_users(tiny_model_dir):
    """The image's service runs as its own non-root user, and a folder may be mounted into it."""
    from pathlib import Path

    for path in Path(tiny_model_dir).iterdir():
        assert path.stat().st_mode & 0o044 == 0o044, f"{path.name}: {oct(path.stat().st_mode)}"


def test_score_images_is_one_pass_over_the_shared_preprocessing(tiny_parser):
    images = [photo(0), photo(1)]
    expected = tiny_parser.scores(to_pixel_values(images, tiny_parser.preprocess))
    torch.testing.assert_close(torch.stack(tiny_parser.score_images(images)), expected)


def test_extra_sizes_average_the_log_scores_of_every_size_on_the_largest_grid(tiny_parser):
    images = [photo(0), photo(1)]
    own = tiny_parser.scores(to_pixel_values(images, tiny_parser.preprocess))  # 64 px in: a 16x16 grid
    larger = tiny_parser.scores(tiny_parser.pixel_values(images, 96))  # 24x24
    smaller = tiny_parser.scores(tiny_parser.pixel_values(images, 32))  # 8x8
    grid = larger.shape[-2:]
    expected = torch.stack([
        torch.nn.functional.interpolate(s.clamp_min(1e-12).log(), size=grid, mode="bilinear", align_corners=False)
        for s in (smaller, own, larger)]).mean(dim=0).exp()
    averaged = torch.stack(tiny_parser.score_images(images, extra_sizes=[96, 32]))
    assert averaged.shape == (2, 19, 24, 24)
    torch.testing.assert_close(averaged, expected, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(averaged, torch.nn.functional.interpolate(own, size=grid, mode="bilinear"), atol=1e-3)


def test_extra_sizes_combine_with_flip_and_the_own_size_adds_nothing(tiny_parser):
    images = [photo(3)]
    plain = torch.stack(tiny_parser.score_images(images, flip=True))
    torch.testing.assert_close(torch.stack(tiny_parser.score_images(images, True, [64])), plain)
    flipped_larger = tiny_parser.scores(tiny_parser.pixel_values(images, 96), flip=True)
    expected = torch.nn.functional.interpolate(plain.log(), size=(24, 24), mode="bilinear").add(
        flipped_larger.log()).div(2).exp()
    torch.testing.assert_close(torch.stack(tiny_parser.score_images(images, True, [96])), expected,
                               rtol=1e-4, atol=1e-7)


def test_auto_dtype_is_bf16_only_on_a_cpu_with_bf16_instructions(monkeypatch):
    from face_parser import modeling

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda: True)
    assert modeling.resolve_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(modeling, "cpu_has_native_bf16", lambda: False)
    assert modeling.resolve_dtype("auto", cpu) == torch.float32
    assert modeling.resolve_dtype("auto", cuda) == torch.float16
    assert modeling.resolve_dtype("float32", cpu) == torch.float32


def test_a_bf16_pass_on_the_cpu_keeps_float32_weights_and_answers_in_float32(tiny_model_dir):
    from face_parser.modeling import FaceParser

    full = FaceParser.load(tiny_model_dir, device="cpu", dtype="float32")
    half = FaceParser.load(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16 and next(half.model.parameters()).dtype == torch.float32
    pixels = to_pixel_values([photo(3)], full.preprocess)
    expected, got = full.scores(pixels), half.scores(pixels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0.05)  # bf16 keeps ~3 significant digits
    assert not torch.equal(got, expected)  # it did compute in bf16


def test_on_the_cpu_the_weights_are_channels_last_and_answer_as_the_stock_model(tiny_model_dir):
    from transformers import AutoModelForUniversalSegmentation

    from face_parser.modeling import FaceParser
    from face_parser.postprocess import semantic_scores

    parser = FaceParser.load(tiny_model_dir, device="cpu", dtype="float32")
    convs = [m.weight for m in parser.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    stock = AutoModelForUniversalSegmentation.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    pixels = to_pixel_values([photo(4), photo(5)], parser.preprocess)
    with torch.no_grad():
        out = stock(pixel_values=pixels.contiguous())
    expected = semantic_scores(out.class_queries_logits, out.masks_queries_logits)
    torch.testing.assert_close(parser.scores(pixels), expected, rtol=1e-4, atol=1e-5)


def test_a_torch_without_the_private_cpu_checks_counts_as_no_bf16(monkeypatch):
    from face_parser import modeling

    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert modeling.cpu_has_native_bf16() is False
    assert modeling.resolve_dtype("auto", torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("preset", ["tiny", "tiny-m2f"])
def test_a_deepened_backbone_starts_as_the_same_function_with_more_blocks(preset):
    torch.manual_seed(0)
    model = build_model(preset, CELEBAMASK_HQ_SCHEME).eval()
    deeper = deepen_backbone(model, [2, 1, 3, 1]).eval()
    stages = deeper.model.pixel_level_module.encoder.encoder.stages
    assert [len(stage.layers) for stage in stages] == [2, 1, 3, 1]
    assert deeper.config.backbone_config.depths == [2, 1, 3, 1] and model.config.backbone_config.depths == [1, 1, 1, 1]
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before, after = model(pixel_values=pixels), deeper(pixel_values=pixels)
    torch.testing.assert_close(after.masks_queries_logits, before.masks_queries_logits)
    torch.testing.assert_close(after.class_queries_logits, before.class_queries_logits)
    new_block = stages[2].layers[2].layer[-1].normalization
    assert torch.count_nonzero(new_block.weight) == 0 and new_block.weight.requires_grad


def test_a_backbone_is_only_deepened():
    model = build_model("tiny", CELEBAMASK_HQ_SCHEME)
    with pytest.raises(ValueError, match="each at least"):
        deepen_backbone(model, [1, 0, 1, 1])
    with pytest.raises(ValueError, match="4 stages"):
        deepen_backbone(model, [2, 2])


def test_class_log_biases_from_the_folder_multiply_each_class_score(tiny_model_dir, tmp_path):
    """``face_parser_class_log_bias`` in config.json (model_training.calibrate writes it): every pass's scores,
    with or without extra sizes, come times ``exp(bias)``; unnamed classes keep theirs."""
    import json
    import shutil

    from face_parser.modeling import FaceParser

    folder = tmp_path / "calibrated"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "face_parser_class_log_bias": {"hat": 1.5,
                                                                                            "l_eye": -0.5}}))
    raw, calibrated = (FaceParser.load(f, device="cpu", dtype="float32") for f in (tiny_model_dir, folder))
    expected = torch.ones(19)
    expected[CELEBAMASK_HQ_SCHEME.id_of("hat")] = np.exp(1.5)
    expected[CELEBAMASK_HQ_SCHEME.id_of("l_eye")] = np.exp(-0.5)
    for extra_sizes in ((), (96,)):
        before = torch.stack(raw.score_images([photo(4)], True, extra_sizes))
        after = torch.stack(calibrated.score_images([photo(4)], True, extra_sizes))
        torch.testing.assert_close(after, before * expected[:, None, None], rtol=1e-4, atol=1e-8)
    assert raw.class_log_bias is None


def test_a_model_started_or_averaged_from_a_calibrated_folder_carries_no_biases(tiny_model_dir, tmp_path):
    """The biases were fitted to the folder's weights: fine-tuned or averaged weights would apply them unasked."""
    import json
    import shutil

    from face_parser.modeling import CLASS_LOG_BIAS_KEY, init_from_pretrained
    from model_training.average import average_models

    folder = tmp_path / "calibrated"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, CLASS_LOG_BIAS_KEY: {"hat": 1.5}}))
    assert not hasattr(init_from_pretrained(str(folder), CELEBAMASK_HQ_SCHEME).config, CLASS_LOG_BIAS_KEY)
    assert not hasattr(average_models([str(folder), tiny_model_dir]).config, CLASS_LOG_BIAS_KEY)


def test_an_input_size_a_stock_processor_would_pad_is_refused(tmp_path):
    from face_parser.modeling import save_model_folder
    from face_parser.preprocess import PreprocessConfig

    with pytest.raises(ValueError, match="multiple of 32"):
        save_model_folder(build_model("tiny", CELEBAMASK_HQ_SCHEME), PreprocessConfig(size=200), tmp_path / "m", "v")


def test_class_log_biases_naming_an_unknown_class_are_refused(tiny_model_dir, tmp_path):
    import json
    import shutil

    from face_parser.modeling import FaceParser

    folder = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "face_parser_class_log_bias": {"beard": 1.0}}))
    with pytest.raises(ValueError, match=r"class_log_bias names classes the model does not have: \['beard'\]"):
        FaceParser.load(folder, device="cpu", dtype="float32")
