"""LaPa: ``<root>/<split>/images/*.jpg`` + ``<root>/<split>/labels/*.png``, 11 classes."""

from __future__ import annotations

from pathlib import Path

from face_parser.labels import LAPA_SCHEME
from model_training.datasets.base import DatasetError
from model_training.datasets.folders import FolderDataset

SPLITS = ("train", "val", "test")


def lapa_dataset(root: str | Path, split: str = "train") -> FolderDataset:
    """One LaPa split (``train``, ``val`` or ``test``, the release's folder names) with LaPa's own label
    scheme. A copy without ``test/`` is told so, not that an ``images/`` folder is missing inside it."""
    if split not in SPLITS:
        raise ValueError(f"LaPa split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = Path(root) / split
    if not folder.is_dir():
        raise DatasetError(f"{folder}: LaPa split folder not found (LaPa has {'/, '.join(SPLITS)}/, "
                           "each with images/ and labels/)")
    return FolderDataset(folder, labels=LAPA_SCHEME, image_dir="images", mask_dir="labels")
