"""Masks whose left/right ids are reversed are found from the parts' centroids and swapped back."""

from __future__ import annotations

import numpy as np
from PIL import Image

from face_parser.labels import CELEBAMASK_HQ_SCHEME as LABELS
from model_training.datasets.folders import FolderDataset
from model_training.datasets.lr_convention import ConventionFixed, convention_votes, find_reversed, is_reversed


def face_mask(reversed_: bool, size: int = 64) -> np.ndarray:
    """l_eye/l_brow on the image's right (CelebAMask-HQ's usual convention) unless ``reversed_``."""
    mask = np.ones((size, size), np.uint8)  # skin
    left_x, right_x = (slice(10, 20), slice(44, 54)) if reversed_ else (slice(44, 54), slice(10, 20))
    mask[24:30, left_x], mask[24:30, right_x] = LABELS.id_of("l_eye"), LABELS.id_of("r_eye")
    mask[16:19, left_x], mask[16:19, right_x] = LABELS.id_of("l_brow"), LABELS.id_of("r_brow")
    return mask


def test_votes_follow_the_centroids():
    assert convention_votes(face_mask(False), LABELS) == 2
    assert convention_votes(face_mask(True), LABELS) == -2
    one_sided = face_mask(False)
    one_sided[one_sided == LABELS.id_of("r_eye")] = 1
    one_sided[one_sided == LABELS.id_of("r_brow")] = 1
    assert convention_votes(one_sided, LABELS) == 0 and not is_reversed(one_sided, LABELS)  # a profile: no vote


def test_reversed_masks_are_found_and_swapped(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i, rev in enumerate([False, True, False, True]):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(face_mask(rev)).save(tmp_path / "masks" / f"{i}.png")
    base = FolderDataset(tmp_path)
    flagged = find_reversed(base, range(4))
    assert flagged == [1, 3]
    fixed = ConventionFixed(base, flagged)
    np.testing.assert_array_equal(fixed[1][1], face_mask(False))
    np.testing.assert_array_equal(fixed.read_mask(3), face_mask(False))
    np.testing.assert_array_equal(fixed[0][1], base[0][1])  # the others are left alone
    assert find_reversed(fixed, range(4)) == []
