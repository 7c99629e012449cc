"""From a dataset of ``(image, mask)`` pairs to model batches: splits, transforms, collate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from face_parser.preprocess import PreprocessConfig, resize_rgb, to_pixel_values
from model_training.augment import AugmentConfig, augment_pair
from model_training.metrics import IGNORE_INDEX

RARE_CLASSES = ("eye_g", "hat", "ear_r", "neck_l")


def split_indices(n: int, val_count: int, seed: int, test_count: int = 0) -> tuple[list[int], list[int], list[int]]:
    """A fixed random split ``(train, val, test)``: the first ``test_count`` of a seeded permutation
    are the test split, the next ``val_count`` the validation split, the rest train.

    The test part comes first so that, with ``test_count=0``, validation is what it always was, and
    with ``test_count=100`` the test split is the old validation split (pairs the v2 model never
    trained on)."""
    if val_count < 0 or test_count < 0 or val_count + test_count >= n:
        raise ValueError(f"val_count + test_count must be in [0, {n}), got {val_count} + {test_count}")
    order = np.random.default_rng(seed).permutation(n)
    test, val, train = np.split(order, [test_count, test_count + val_count])
    return sorted(train.tolist()), sorted(val.tolist()), sorted(test.tolist())


@dataclass
class TrainingSubset(Dataset):
    """Augmented samples ``{pixel_values (3,S,S), labels_hw (S,S)}`` drawn from ``indices``."""

    base: Dataset
    indices: Sequence[int]
    augment: AugmentConfig
    preprocess: PreprocessConfig
    seed: int = 0

    def __post_init__(self):
        self._flip = self.base.labels.flip_permutation()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        image, mask = self.base[self.indices[i]]
        # torch's generator is seeded by the Trainer and differs per DataLoader worker
        rng = np.random.default_rng([self.seed, i, int(torch.randint(0, 2**31, ()))])
        image, mask = augment_pair(image, mask, self.augment, self._flip, rng)
        return {"pixel_values": to_pixel_values([image], self.preprocess)[0],
                "labels_hw": torch.from_numpy(mask.astype(np.int64))}


@dataclass
class EvalSubset(Dataset):
    """Un-augmented samples; the labels keep the dataset's own resolution (512 for CelebAMask-HQ)."""

    base: Dataset
    indices: Sequence[int]
    preprocess: PreprocessConfig

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        image, mask = self.base[self.indices[i]]
        return {"pixel_values": to_pixel_values([resize_rgb(image, self.preprocess.size)], self.preprocess)[0],
                "labels_hw": torch.from_numpy(mask.astype(np.int64))}


def collate(samples: list[dict]) -> dict:
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def class_statistics(base: Dataset, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel frequency per class and, per index, whether it holds a rare class (reads masks only)."""
    k = len(base.labels)
    counts = np.zeros(k, dtype=np.int64)
    rare_ids = base.labels.ids_of(RARE_CLASSES)
    has_rare = np.zeros(len(indices), dtype=bool)
    for j, idx in enumerate(tqdm(indices, desc="class statistics", leave=False)):
        mask = base.read_mask(idx)
        hist = np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=256)[:k]
        counts += hist
        has_rare[j] = bool(hist[rare_ids].sum()) if rare_ids else False
    return counts / max(counts.sum(), 1), has_rare


def balanced_class_weights(freq: np.ndarray, power: float = 0.5, max_weight: float = 10.0) -> torch.Tensor:
    """``(median / freq) ** power``, clipped: rare parts count more, absent ones nothing."""
    present = freq > 0
    weights = np.zeros_like(freq)
    weights[present] = (np.median(freq[present]) / freq[present]) ** power
    return torch.tensor(np.clip(weights, 0.0, max_weight), dtype=torch.float32)


def oversample(indices: Sequence[int], has_rare: np.ndarray, repeat: int) -> list[int]:
    """Repeat the images that hold a rare class ``repeat`` times in each epoch."""
    return list(indices) + [i for i, rare in zip(indices, has_rare, strict=True) if rare] * max(repeat - 1, 0)
