"""model_training.data: class statistics, the copy-paste augmentation of rare accessories, and evaluation
batches of masks of several sizes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from face_parser.labels import CELEBAMASK_HQ_SCHEME
from face_parser.preprocess import PreprocessConfig
from model_training import train
from model_training.data import (
    PAD_INDEX,
    RARE_CLASSES,
    CopyPaste,
    EvalSubset,
    class_statistics,
    collate,
    holding,
    label_sizes,
)
from model_training.datasets.folders import FolderDataset

NECKLACE = CELEBAMASK_HQ_SCHEME.names.index("neck_l")
HAT = CELEBAMASK_HQ_SCHEME.names.index("hat")
SKIN = CELEBAMASK_HQ_SCHEME.names.index("skin")


def write_pairs(root, pairs):
    """PNG pairs (lossless, so pasted pixels can be compared exactly) in the folder layout."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (image, mask) in enumerate(pairs):
        Image.fromarray(image).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    return FolderDataset(root)


def plain(colour, size=32, class_id=SKIN):
    return np.full((size, size, 3), colour, np.uint8), np.full((size, size), class_id, np.uint8)


def with_part(colour, class_id, rows, size=32):
    image, mask = plain(colour, size)
    image[rows, 8:24], mask[rows, 8:24] = 255 - np.asarray(colour, np.uint8), class_id
    return image, mask


def test_statistics_say_which_photos_hold_each_accessory(tmp_path):
    ds = write_pairs(tmp_path, [plain((0, 0, 200)), with_part((200, 0, 0), NECKLACE, slice(20, 24)),
                                with_part((0, 200, 0), HAT, slice(0, 4)), with_part((9, 9, 9), NECKLACE, slice(2, 3))])
    freq, present = class_statistics(ds, [0, 1, 2, 3])
    assert present.shape == (4, len(CELEBAMASK_HQ_SCHEME)) and present[:, SKIN].all()
    assert freq.sum() == pytest.approx(1) and freq[NECKLACE] == pytest.approx((64 + 16) / (4 * 32 * 32))
    donors = holding([0, 1, 2, 3], present, CELEBAMASK_HQ_SCHEME.ids_of(RARE_CLASSES))
    assert donors[NECKLACE] == [1, 3] and donors[HAT] == [2]
    assert donors[CELEBAMASK_HQ_SCHEME.names.index("eye_g")] == []
    # indices that are not 0..N-1 (a training split) are kept as they are
    assert holding([5, 7], present[[1, 2]], [NECKLACE, HAT]) == {NECKLACE: [5], HAT: [7]}


def test_paste_copies_the_donors_part_and_its_labels_and_leaves_the_rest(tmp_path):
    ds = write_pairs(tmp_path, [plain((0, 0, 200)), with_part((200, 0, 0), NECKLACE, slice(20, 24))])
    image, mask = ds[0]
    kept_image, kept_mask = image.copy(), mask.copy()
    out_image, out_mask = CopyPaste(ds, {NECKLACE: [1]}, prob=1.0)(image, mask, np.random.default_rng(0))
    region = np.zeros(mask.shape, bool)
    region[20:24, 8:24] = True
    assert (out_mask[region] == NECKLACE).all() and (out_mask[~region] == SKIN).all()
    assert (out_image[region] == (55, 255, 255)).all() and (out_image[~region] == (0, 0, 200)).all()
    assert (image == kept_image).all() and (mask == kept_mask).all()  # the sample itself is not changed


def test_each_accessory_with_donors_is_pasted_about_equally_often(tmp_path):
    ds = write_pairs(tmp_path, [plain((0, 0, 200)), with_part((200, 0, 0), NECKLACE, slice(20, 24)),
                                with_part((0, 200, 0), HAT, slice(0, 4))])
    paste = CopyPaste(ds, {NECKLACE: [1], HAT: [2], CELEBAMASK_HQ_SCHEME.names.index("eye_g"): []}, prob=0.5)
    image, mask = ds[0]
    rng = np.random.default_rng(1)
    pasted = [set(np.unique(paste(image, mask, rng)[1]).tolist()) - {SKIN} for _ in range(400)]
    counts = {c: sum(c in p for p in pasted) for c in (NECKLACE, HAT)}
    assert all(len(p) <= 1 for p in pasted)  # one accessory at a time
    assert 70 <= counts[NECKLACE] <= 130 and 70 <= counts[HAT] <= 130  # 100 each expected


@pytest.mark.parametrize("donors, prob", [({NECKLACE: [1]}, 0.0), ({NECKLACE: []}, 1.0), ({}, 1.0)])
def test_nothing_is_pasted_without_chance_or_donors(tmp_path, donors, prob):
    ds = write_pairs(tmp_path, [plain((0, 0, 200)), with_part((200, 0, 0), NECKLACE, slice(20, 24))])
    image, mask = ds[0]
    out_image, out_mask = CopyPaste(ds, donors, prob)(image, mask, np.random.default_rng(0))
    assert (out_image == image).all() and (out_mask == mask).all()


def test_a_donor_of_another_size_is_stretched_to_the_sample(tmp_path):
    ds = write_pairs(tmp_path / "a", [plain((0, 0, 200), size=32)])
    donors = write_pairs(tmp_path / "b", [with_part((200, 0, 0), NECKLACE, slice(40, 48), size=64)])
    out_image, out_mask = CopyPaste(donors, {NECKLACE: [0]}, 1.0)(*ds[0], np.random.default_rng(0))
    assert out_mask.shape == (32, 32) and (out_mask[20:24, 4:12] == NECKLACE).all()
    assert (out_mask[:19] == SKIN).all() and (out_mask[25:] == SKIN).all()


def test_training_pastes_only_from_its_own_split(tmp_path):
    pairs = [with_part((200, 0, 0), NECKLACE, slice(20, 24)) if i % 2 else plain((0, 0, 200)) for i in range(12)]
    write_pairs(tmp_path, pairs)
    args = train.DataArguments(data_dir=str(tmp_path), val_count=3, test_count=3, image_size=32, copy_paste=0.5)
    training, validation, _, record = train.build_datasets(args, PreprocessConfig(size=32))
    train_idx = sorted(set(training.indices))  # photos with a rare class are listed twice (rare_repeat)
    assert not set(train_idx) & (set(record["val_indices"]) | set(record["test_indices"]))
    assert training.paste.donors[NECKLACE] == [i for i in train_idx if i % 2] != []
    assert training.paste.prob == 0.5
    no_paste, *_ = train.build_datasets(train.DataArguments(data_dir=str(tmp_path), val_count=3, test_count=3,
                                                            image_size=32), PreprocessConfig(size=32))
    assert no_paste.paste is None


def test_evaluation_labels_are_padded_to_the_largest_mask_and_keep_their_own_pixels(tmp_path):
    """Masks of several sizes batch together (and concatenate across batches and ranks) at one size."""
    small, large = plain((10, 20, 30), size=80), plain((10, 20, 30), size=96, class_id=NECKLACE)
    base = write_pairs(tmp_path, [small, large, small])
    subset = EvalSubset(base, [0, 1, 2], PreprocessConfig(size=64))
    batch = collate([subset[0], subset[1]])
    assert batch["pixel_values"].shape == (2, 3, 64, 64) and batch["labels_hw"].shape == (2, 96, 96)
    assert (batch["labels_hw"][0, :80, :80] == SKIN).all() and (batch["labels_hw"][0, 80:] == PAD_INDEX).all()
    assert (batch["labels_hw"][0, :, 80:] == PAD_INDEX).all() and (batch["labels_hw"][1] == NECKLACE).all()
    assert label_sizes(batch["labels_hw"]) == [(80, 80), (96, 96)]
