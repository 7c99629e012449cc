"""Flip test-time augmentation in ``model_training.evaluate``: mirrored back, left and right swapped."""

from __future__ import annotations

import numpy as np
import torch

from model_training.evaluate import flipped_scores, predict_label_maps


def photo(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)


def test_flipped_scores_mirror_the_scores_back_and_swap_left_and_right(tiny_parser):
    image = photo()
    own = torch.stack(tiny_parser.score_images([image]))[0]
    swap = tiny_parser.labels.flip_permutation().astype(np.int64)
    left, right = tiny_parser.labels.names.index("l_eye"), tiny_parser.labels.names.index("r_eye")
    assert swap[left] == right and swap[right] == left
    got = flipped_scores(tiny_parser, [np.ascontiguousarray(image[:, ::-1])])[0]
    torch.testing.assert_close(got, own.flip(-1)[swap])
    assert not torch.allclose(got, own.flip(-1))  # the swap is not a no-op for this model


def test_flip_averaged_label_maps_keep_the_photo_size_and_the_label_ids(tiny_parser):
    images = [photo(1), photo(2)]
    plain = predict_label_maps(tiny_parser, images, (96, 128))
    flipped = predict_label_maps(tiny_parser, images, (96, 128), flip=True)
    assert plain.shape == flipped.shape == (2, 96, 128) and flipped.dtype == np.uint8
    assert flipped.max() < len(tiny_parser.labels)
