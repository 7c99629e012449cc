"""What every dataset yields, and the checks that turn bad files into clear errors.

A dataset item is ``(image_hwc, mask_hw)``: ``(H, W, 3)`` uint8 RGB and ``(H, W)``
uint8 class ids in the dataset's :class:`~face_parser.labels.LabelScheme`
(255 = ignore). A problem with a file raises :class:`DatasetError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from face_parser.labels import LabelScheme

IGNORE_INDEX = 255


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, or raise :class:`DatasetError`."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from None


def read_mask(path: Path) -> np.ndarray:
    """Read a single-channel class-id PNG as ``(H, W)`` uint8, or raise :class:`DatasetError`."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"{path}: mask must be single-channel class ids, got mode {im.mode}")
            mask = np.asarray(im)
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: cannot read mask ({exc})") from None
    if mask.max(initial=0) > 255:
        raise DatasetError(f"{path}: class id {int(mask.max())} does not fit the label scheme")
    return mask.astype(np.uint8)


def check_pair(image_hwc: np.ndarray, mask_hw: np.ndarray, labels: LabelScheme, image_path, mask_path) -> None:
    """Raise :class:`DatasetError` when sizes differ or a class id is outside ``labels``."""
    if image_hwc.shape[:2] != mask_hw.shape:
        raise DatasetError(
            f"{mask_path}: mask is {mask_hw.shape[1]}x{mask_hw.shape[0]} but image {image_path} "
            f"is {image_hwc.shape[1]}x{image_hwc.shape[0]}"
        )
    ids = np.unique(mask_hw)
    bad = ids[(ids >= len(labels)) & (ids != IGNORE_INDEX)]
    if bad.size:
        raise DatasetError(
            f"{mask_path}: class ids {bad.tolist()} are outside the label scheme (0..{len(labels) - 1}, 255 = ignore)"
        )


def mask_size(dataset: Dataset, index: int) -> tuple[int, int]:
    """``(H, W)`` of a mask: from the dataset's ``mask_size`` when it can tell without decoding, else read."""
    if hasattr(dataset, "mask_size"):
        return dataset.mask_size(index)
    height, width = dataset.read_mask(index).shape[:2]
    return height, width
