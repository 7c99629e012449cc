"""model_training.augment: the photo is shrunk as serving shrinks it, and stays registered with its mask."""

from __future__ import annotations

import numpy as np
import pytest

from face_parser.labels import CELEBAMASK_HQ_SCHEME
from face_parser.preprocess import resize_rgb
from model_training.augment import AugmentConfig, augment_pair

FLIP = CELEBAMASK_HQ_SCHEME.flip_permutation()
STILL = {"min_scale": 1, "max_scale": 1, "max_rotate_deg": 0, "max_translate": 0, "flip_prob": 0, "color_jitter": 0}


def stripes(size: int = 512) -> np.ndarray:
    """One-pixel black and white columns: what an unfiltered shrink turns into false patterns."""
    row = np.where(np.arange(size) % 2, 255, 0).astype(np.uint8)
    return np.repeat(np.broadcast_to(row, (size, size))[..., None], 3, axis=2).copy()


@pytest.mark.parametrize("size", [256, 352])
def test_an_unwarped_sample_is_exactly_the_served_resize(size):
    photo = stripes()
    image, _ = augment_pair(photo, np.zeros((512, 512), np.uint8), AugmentConfig(size=size, **STILL), FLIP,
                            np.random.default_rng(0))
    np.testing.assert_array_equal(image, resize_rgb(photo, size))
    # grey, as an antialiased resize makes them (sampled unfiltered: all black at 256 px, bands at 352)
    assert abs(image.mean() - 127.5) < 5 and image.std() < 30


def test_a_warped_photo_stays_registered_with_its_mask():
    photo = np.zeros((512, 512, 3), np.uint8)
    mask = np.zeros((512, 512), np.uint8)
    photo[150:350, 180:330] = 255
    mask[150:350, 180:330] = 1
    cfg = AugmentConfig(size=352, color_jitter=0, flip_prob=0)
    for seed in range(5):
        image, labels = augment_pair(photo, mask, cfg, FLIP, np.random.default_rng(seed))
        bright, part = image[..., 0] > 127, labels == 1
        assert (bright & part).sum() / (bright | part).sum() > 0.97
