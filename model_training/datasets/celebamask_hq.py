"""The official CelebAMask-HQ release layout.

``CelebA-HQ-img/<n>.jpg`` (1024 px) and per-part binary masks
``CelebAMask-HQ-mask-anno/<n // 2000>/<n:05d>_<part>.png`` (512 px), merged into
one class-id mask in the official order (a later part overwrites an earlier
one, as in the release's ``g_mask.py``). The train/val/test split comes from
CelebA's ``list_eval_partition.txt`` through ``CelebA-HQ-to-CelebA-mapping.txt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from face_parser.labels import CELEBAMASK_HQ_SCHEME
from model_training.datasets.base import DatasetError, read_rgb

SPLITS = {"train": 0, "val": 1, "test": 2}
MASK_SIZE = 512


def official_split(root: Path, split: str) -> list[int]:
    """CelebA-HQ indices of one official split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    partition_file = root / "list_eval_partition.txt"
    mapping_file = root / "CelebA-HQ-to-CelebA-mapping.txt"
    for f in (partition_file, mapping_file):
        if not f.is_file():
            raise DatasetError(f"{f}: split file not found (it ships with CelebA / CelebAMask-HQ)")
    partition = {}
    for line in partition_file.read_text().split("\n"):
        parts = line.split()
        if len(parts) == 2:
            partition[parts[0]] = int(parts[1])
    indices = []
    for line in mapping_file.read_text().split("\n")[1:]:
        parts = line.split()
        if len(parts) == 3 and parts[2] in partition and partition[parts[2]] == SPLITS[split]:
            indices.append(int(parts[0]))
    return indices


def read_part(path: Path) -> np.ndarray:
    """One part mask (0 / 255, stored grey or RGB) as ``(H, W)`` uint8 grey. A truncated or unreadable file is
    a :class:`DatasetError` naming it, so that training stops with the path, not a bare ``OSError``."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read part mask ({exc})") from None


class CelebAMaskHQDataset(Dataset):
    """Images resized to 512 px (the masks' size) with merged class-id masks."""

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        self.labels = CELEBAMASK_HQ_SCHEME
        self.indices = official_split(self.root, split)
        if not self.indices:
            raise DatasetError(f"{self.root}: no images in split {split!r}")

    def __len__(self) -> int:
        return len(self.indices)

    def _part_path(self, n: int, part: str) -> Path:
        return self.root / "CelebAMask-HQ-mask-anno" / str(n // 2000) / f"{n:05d}_{part}.png"

    def mask_size(self, index: int) -> tuple[int, int]:
        """Every merged mask is ``MASK_SIZE`` square: its 19 part files need no reading."""
        return MASK_SIZE, MASK_SIZE

    def read_mask(self, index: int) -> np.ndarray:
        n = self.indices[index]
        mask = np.zeros((MASK_SIZE, MASK_SIZE), dtype=np.uint8)
        for class_id, part in enumerate(self.labels.names[1:], start=1):
            path = self._part_path(n, part)
            if not path.is_file():
                continue  # a part absent from a face has no file
            part_mask = read_part(path)
            if part_mask.shape != mask.shape:
                raise DatasetError(f"{path}: part mask is {part_mask.shape[1]}x{part_mask.shape[0]}, expected 512x512")
            mask[part_mask > 0] = class_id
        return mask

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / "CelebA-HQ-img" / f"{self.indices[index]}.jpg"
        image = read_rgb(path)
        if image.shape[:2] != (MASK_SIZE, MASK_SIZE):
            image = np.asarray(Image.fromarray(image).resize((MASK_SIZE, MASK_SIZE), Image.Resampling.BILINEAR))
        return image, self.read_mask(index)
