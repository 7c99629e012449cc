"""Masks that name left and right the other way round, found from the parts' centroids.

In CelebAMask-HQ ``l_eye``, ``l_brow`` and ``l_ear`` are the person's left: they lie to the
*right* of ``r_eye`` etc. in the image. About 7% of the masks use the opposite convention.
Training on both teaches the model that left and right are a coin toss, and scoring on them
punishes a model that gets them right, so such masks are found and their left/right ids
swapped (the photo is left as it is). Every correction is counted and reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from face_parser.labels import LabelScheme
from model_training.datasets.base import mask_size


def convention_votes(mask_hw: np.ndarray, labels: LabelScheme) -> int:
    """For each left/right pair with both parts visible: +1 when the left part lies to the right of
    the right part in the image (the usual convention), -1 when to its left. Returns the sum."""
    cols = np.arange(mask_hw.shape[1])
    votes = 0
    for left_id, right_id in labels.mirror_pairs():
        left_cols = (mask_hw == left_id).sum(0)
        right_cols = (mask_hw == right_id).sum(0)
        if left_cols.sum() and right_cols.sum():
            left_x = (left_cols * cols).sum() / left_cols.sum()
            right_x = (right_cols * cols).sum() / right_cols.sum()
            votes += 1 if left_x > right_x else -1
    return votes


def is_reversed(mask_hw: np.ndarray, labels: LabelScheme) -> bool:
    """True when the visible pairs say, by majority, that this mask swaps left and right."""
    return convention_votes(mask_hw, labels) < 0


def find_reversed(base: Dataset, indices: Sequence[int]) -> list[int]:
    """Indices (of ``indices``) whose masks use the reversed convention (reads masks only)."""
    return [i for i in tqdm(indices, desc="left/right convention", leave=False)
            if is_reversed(base.read_mask(i), base.labels)]


class ConventionFixed(Dataset):
    """``base`` with the left/right ids of the ``reversed_indices`` masks swapped back."""

    def __init__(self, base: Dataset, reversed_indices: Sequence[int]):
        self.base, self.labels = base, base.labels
        self.reversed = frozenset(reversed_indices)
        swap = base.labels.flip_permutation()
        self._swap_lut = np.arange(256, dtype=np.uint8)  # ids past the scheme (255 = ignore) stay
        self._swap_lut[: len(swap)] = swap

    def __len__(self) -> int:
        return len(self.base)

    def _fix(self, index: int, mask_hw: np.ndarray) -> np.ndarray:
        return self._swap_lut[mask_hw] if index in self.reversed else mask_hw

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self.base[index]
        return image, self._fix(index, mask)

    def read_mask(self, index: int) -> np.ndarray:
        return self._fix(index, self.base.read_mask(index))

    def mask_size(self, index: int) -> tuple[int, int]:
        return mask_size(self.base, index)


def fix_conventions(train_base: Dataset, val_base: Dataset, train_idx: Sequence[int],
                    val_idx: Sequence[int]) -> tuple[ConventionFixed, ConventionFixed]:
    """Wrap the training and validation datasets (often one and the same) with their corrections."""
    if val_base is train_base:
        fixed = ConventionFixed(train_base, find_reversed(train_base, list(train_idx) + list(val_idx)))
        return fixed, fixed
    return (ConventionFixed(train_base, find_reversed(train_base, train_idx)),
            ConventionFixed(val_base, find_reversed(val_base, val_idx)))
