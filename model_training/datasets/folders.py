"""Flat folders: ``images/<id>.jpg`` + ``masks/<id>.png`` (the celebamask-mini layout)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from face_parser.labels import CELEBAMASK_HQ_SCHEME, LabelScheme
from model_training.datasets.base import DatasetError, check_pair, read_mask, read_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class FolderDataset(Dataset):
    """Pairs ``<root>/<image_dir>/<id>.<ext>`` with ``<root>/<mask_dir>/<id>.png``.

    Missing masks are reported when the dataset is built; unreadable files, size
    mismatches and out-of-scheme ids when an item is read (or all at once by
    :meth:`validate`).
    """

    def __init__(
        self, root: str | Path, labels: LabelScheme = CELEBAMASK_HQ_SCHEME,
        ids: Sequence[str] | None = None, image_dir: str = "images", mask_dir: str = "masks",
    ):
        self.root = Path(root)
        self.labels = labels
        images = self.root / image_dir
        if not images.is_dir():
            raise DatasetError(f"{images}: image folder not found")
        by_id = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        if not by_id:
            raise DatasetError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.ids = list(ids) if ids is not None else sorted(by_id)
        self.image_paths, self.mask_paths = [], []
        for i in self.ids:
            if i not in by_id:
                raise DatasetError(f"{images}: no image for id {i!r}")
            mask = self.root / mask_dir / f"{i}.png"
            if not mask.is_file():
                raise DatasetError(f"{mask}: mask missing for image {by_id[i]}")
            self.image_paths.append(by_id[i])
            self.mask_paths.append(mask)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_rgb(self.image_paths[index])
        mask = read_mask(self.mask_paths[index])
        check_pair(image, mask, self.labels, self.image_paths[index], self.mask_paths[index])
        return image, mask

    def read_mask(self, index: int) -> np.ndarray:
        """The mask alone (class statistics need no image decode)."""
        return read_mask(self.mask_paths[index])

    def mask_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of a mask from its file's header, nothing decoded."""
        try:
            with Image.open(self.mask_paths[index]) as im:
                return im.height, im.width
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"{self.mask_paths[index]}: unreadable mask ({exc})") from None
