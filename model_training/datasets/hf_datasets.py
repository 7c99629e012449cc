"""A Hugging Face ``datasets`` dataset with an image column and a label-map column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from face_parser.labels import CELEBAMASK_HQ_SCHEME, LabelScheme
from model_training.datasets.base import DatasetError, check_pair


class HFSegmentationDataset(Dataset):
    """Wraps a local ``save_to_disk`` folder, a local data folder, or a hub id (when online)."""

    def __init__(
        self, name_or_path: str, split: str = "train", image_column: str = "image",
        label_column: str = "label", labels: LabelScheme = CELEBAMASK_HQ_SCHEME,
    ):
        import datasets  # imported here: only this loader needs it

        if Path(name_or_path, "dataset_dict.json").is_file() or Path(name_or_path, "dataset_info.json").is_file():
            loaded = datasets.load_from_disk(name_or_path)
            ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            ds = datasets.load_dataset(name_or_path, split=split)
        missing = [c for c in (image_column, label_column) if c not in ds.column_names]
        if missing:
            raise DatasetError(f"{name_or_path}: columns {missing} not found; it has {ds.column_names}")
        self.ds, self.name = ds, name_or_path
        self.image_column, self.label_column, self.labels = image_column, label_column, labels

    def __len__(self) -> int:
        return len(self.ds)

    def _where(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def read_mask(self, index: int) -> np.ndarray:
        """Row ``index``'s label map as ``(H, W)`` uint8 class ids. Ids outside 0..255 are refused: a cast would
        wrap them silently (-1 to 255, ignored; 257 to 1, skin)."""
        mask = np.asarray(self.ds[index][self.label_column])
        if mask.ndim == 3:
            mask = mask[..., 0]
        outside = (mask < 0) | (mask > 255)
        if outside.any():
            raise DatasetError(f"{self._where(index)}.{self.label_column}: class ids "
                               f"{np.unique(mask[outside]).tolist()} do not fit the label scheme (0..255)")
        return mask.astype(np.uint8)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.ds[index]
        image = np.asarray(row[self.image_column].convert("RGB"))
        mask = self.read_mask(index)
        check_pair(image, mask, self.labels, self._where(index), f"{self._where(index)}.{self.label_column}")
        return image, mask
