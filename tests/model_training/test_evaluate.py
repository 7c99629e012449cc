"""model_training.evaluate: label maps at the ground truth's size, with and without flip test-time augmentation."""

from __future__ import annotations

import numpy as np

from model_training.evaluate import predict_label_maps


def test_label_maps_keep_the_photo_size_and_the_label_ids_with_and_without_flip(tiny_parser):
    images = [np.random.default_rng(seed).integers(0, 256, size=(96, 128, 3), dtype=np.uint8) for seed in (1, 2)]
    for flip in (False, True):
        maps = predict_label_maps(tiny_parser, images, (96, 128), flip)
        assert maps.shape == (2, 96, 128) and maps.dtype == np.uint8 and maps.max() < len(tiny_parser.labels)
