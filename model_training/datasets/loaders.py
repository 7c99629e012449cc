"""Pick a loader by name and return train/validation parts."""

from __future__ import annotations

from model_training.data import split_indices
from model_training.datasets.celebamask_hq import CelebAMaskHQDataset
from model_training.datasets.folders import FolderDataset
from model_training.datasets.hf_datasets import HFSegmentationDataset
from model_training.datasets.lapa import lapa_dataset


def open_dataset(args, part: str = "val"):
    """``(train_base, eval_base, train_indices, eval_indices)`` for ``args.dataset``, where the eval
    part is the validation split (``part="val"``) or the test split (``part="test"``).

    Datasets with an official validation split use it; flat folders and single
    splits hold out ``args.test_count`` (test) and ``args.val_count`` (validation)
    random pairs, seed ``args.split_seed``.
    """
    if args.dataset == "celebamask-hq":
        train, val = CelebAMaskHQDataset(args.data_dir, "train"), CelebAMaskHQDataset(args.data_dir, "val")
        return train, val, list(range(len(train))), list(range(len(val)))
    if args.dataset == "lapa":
        train, val = lapa_dataset(args.data_dir, "train"), lapa_dataset(args.data_dir, "val")
        return train, val, list(range(len(train))), list(range(len(val)))
    if args.dataset == "folder":
        base = FolderDataset(args.data_dir)
    elif args.dataset == "hf":
        base = HFSegmentationDataset(args.data_dir, "train", args.image_column, args.label_column)
    else:
        raise ValueError(f"unknown dataset {args.dataset!r}: folder | celebamask-hq | hf | lapa")
    train_idx, val_idx, test_idx = split_indices(len(base), args.val_count, args.split_seed,
                                                 getattr(args, "test_count", 0))
    if part not in ("val", "test"):
        raise ValueError(f"unknown split part {part!r}: val | test")
    return base, base, train_idx, (test_idx if part == "test" else val_idx)
