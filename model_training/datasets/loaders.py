"""Pick a loader by name and return its training part and one held-out part."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from model_training.data import split_indices
from model_training.datasets.celebamask_hq import CelebAMaskHQDataset
from model_training.datasets.folders import FolderDataset
from model_training.datasets.hf_datasets import HFSegmentationDataset
from model_training.datasets.lapa import lapa_dataset

PARTS = ("val", "test")

# datasets whose release fixes train / val / test: name -> opener of one split by its released name
OFFICIAL_SPLITS: dict[str, Callable[[str | Path, str], CelebAMaskHQDataset | FolderDataset]] = {
    "celebamask-hq": CelebAMaskHQDataset, "lapa": lapa_dataset}


def open_dataset(args, part: str = "val"):
    """``(train_base, eval_base, train_indices, eval_indices)`` for ``args.dataset``, where the eval
    part is the validation split (``part="val"``) or the test split (``part="test"``).

    CelebAMask-HQ and LaPa use their official splits (``args.val_count``, ``test_count`` and
    ``split_seed`` do not apply); flat folders and single hf splits hold out ``args.test_count``
    (test) and ``args.val_count`` (validation) random pairs, seed ``args.split_seed``.
    """
    if part not in PARTS:
        raise ValueError(f"unknown split part {part!r}: {' | '.join(PARTS)}")
    if args.dataset in OFFICIAL_SPLITS:
        open_split = OFFICIAL_SPLITS[args.dataset]
        train, held = open_split(args.data_dir, "train"), open_split(args.data_dir, part)
        return train, held, list(range(len(train))), list(range(len(held)))
    base: FolderDataset | HFSegmentationDataset
    if args.dataset == "folder":
        base = FolderDataset(args.data_dir)
    elif args.dataset == "hf":
        base = HFSegmentationDataset(args.data_dir, "train", args.image_column, args.label_column)
    else:
        raise ValueError(f"unknown dataset {args.dataset!r}: folder | celebamask-hq | hf | lapa")
    train_idx, val_idx, test_idx = split_indices(len(base), args.val_count, args.split_seed,
                                                 getattr(args, "test_count", 0))
    return base, base, train_idx, (test_idx if part == "test" else val_idx)
