"""Photo -> model input: resizing, stacking and the fused normalising."""

from __future__ import annotations

import numpy as np
import torch

from face_parser.preprocess import PreprocessConfig, normalise, resize_rgb, stack_rgb, to_pixel_values


def photos() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(40, 40, 3), (23, 57, 3)]]


def test_stack_rgb_resizes_each_photo_and_keeps_uint8():
    batch = stack_rgb(photos(), 40)
    assert batch.shape == (2, 3, 40, 40) and batch.dtype == torch.uint8
    np.testing.assert_array_equal(batch[0].permute(1, 2, 0).numpy(), photos()[0])  # already the size: untouched
    np.testing.assert_array_equal(batch[1].permute(1, 2, 0).numpy(), resize_rgb(photos()[1], 40))


def test_normalise_is_the_rescale_then_standardise_formula():
    config = PreprocessConfig(size=40, mean=(0.5, 0.25, 0.125), std=(0.2, 0.4, 0.8))
    batch = stack_rgb(photos(), 40)
    mean, std = torch.tensor(config.mean).view(1, 3, 1, 1), torch.tensor(config.std).view(1, 3, 1, 1)
    expected = (batch.float() / 255 - mean) / std
    got = normalise(batch, config)
    assert got.dtype == torch.float32 and got.device == batch.device
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(to_pixel_values(photos(), config), expected, rtol=0, atol=1e-5)
