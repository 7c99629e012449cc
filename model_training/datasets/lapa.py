"""LaPa: ``<root>/<split>/images/*.jpg`` + ``<root>/<split>/labels/*.png``, 11 classes."""

from __future__ import annotations

from pathlib import Path

from face_parser.labels import LAPA_SCHEME
from model_training.datasets.folders import FolderDataset


def lapa_dataset(root: str | Path, split: str = "train") -> FolderDataset:
    """One LaPa split (``train``, ``val`` or ``test``) with LaPa's own label scheme."""
    return FolderDataset(Path(root) / split, labels=LAPA_SCHEME, image_dir="images", mask_dir="labels")
