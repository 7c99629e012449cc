"""From a dataset of ``(image, mask)`` pairs to model batches: splits, transforms, collate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from face_parser.preprocess import PreprocessConfig, resize_rgb, to_pixel_values
from model_training.augment import AugmentConfig, augment_pair
from model_training.datasets.base import mask_size
from model_training.metrics import IGNORE_INDEX

RARE_CLASSES = ("eye_g", "hat", "ear_r", "neck_l")  # the accessories: oversampled, and what CopyPaste pastes
# beyond a smaller mask in an evaluation batch: the Trainer's own padding value, never a class id (0..254) nor
# the ignore index (255), which masks hold inside themselves
PAD_INDEX = -100


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


@dataclass(frozen=True)
class CopyPaste:
    """Copy-paste augmentation for the rare accessories (Ghiasi et al., 2021): with probability ``prob``, the
    pixels of one accessory class (chosen uniformly among those that have donors) are cut from a random
    training photo that holds it and pasted, photo and labels, over the sample.

    CelebA-HQ's faces are aligned (eyes and mouth at fixed places), so an earring, necklace, hat or pair of
    glasses lands about where it belongs on any other face, before the sample's own warp. Necklaces (32 of
    700 training photos) and earrings are seen on many more faces, and in front of other clothes and hair."""

    base: Dataset
    donors: Mapping[int, Sequence[int]]  # class id -> indices (into ``base``) of photos that hold it
    prob: float

    def __call__(self, image_hwc: np.ndarray, mask_hw: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        classes = [c for c, found in self.donors.items() if found]
        if not classes or rng.random() >= self.prob:
            return image_hwc, mask_hw
        class_id = classes[rng.integers(len(classes))]
        found = self.donors[class_id]
        donor_image, donor_mask = self.base[found[rng.integers(len(found))]]
        if donor_mask.shape != mask_hw.shape:  # another size: stretched to the sample's (aligned datasets)
            size = mask_hw.shape[::-1]
            donor_image = np.asarray(Image.fromarray(donor_image).resize(size, Image.Resampling.BILINEAR))
            donor_mask = np.asarray(Image.fromarray(donor_mask).resize(size, Image.Resampling.NEAREST))
        region = donor_mask == class_id
        image, mask = image_hwc.copy(), mask_hw.copy()
        image[region], mask[region] = donor_image[region], class_id
        return image, mask


@dataclass
class TrainingSubset(Dataset):
    """Augmented samples ``{pixel_values (3,S,S), labels_hw (S,S)}`` drawn from ``indices``."""

    base: Dataset
    indices: Sequence[int]
    augment: AugmentConfig
    preprocess: PreprocessConfig
    seed: int = 0
    paste: CopyPaste | None = None

    def __post_init__(self):
        self._flip = self.base.labels.flip_permutation()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        image, mask = self.base[self.indices[i]]
        # torch's generator is seeded by the Trainer and differs per DataLoader worker
        rng = np.random.default_rng([self.seed, i, int(torch.randint(0, 2**31, ()))])
        if self.paste is not None:
            image, mask = self.paste(image, mask, rng)
        image, mask = augment_pair(image, mask, self.augment, self._flip, rng)
        return {"pixel_values": to_pixel_values([image], self.preprocess)[0],
                "labels_hw": torch.from_numpy(mask.astype(np.int64))}


@dataclass
class EvalSubset(Dataset):
    """Un-augmented samples; the labels keep the dataset's own resolution (512 for CelebAMask-HQ).

    Masks of several sizes (LaPa, mixed folders) are padded with :data:`PAD_INDEX` to the largest of the
    subset, ``label_size``: the Trainer stacks a batch, concatenates the batches (padding only their second
    dimension) and gathers them across ranks, all of which need one size."""

    base: Dataset
    indices: Sequence[int]
    preprocess: PreprocessConfig

    def __post_init__(self):
        sizes = [mask_size(self.base, i) for i in self.indices]  # headers, not masks: the masks are read per batch
        self.label_size = (max(h for h, _ in sizes), max(w for _, w in sizes))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        image, mask = self.base[self.indices[i]]
        labels_hw = torch.full(self.label_size, PAD_INDEX, dtype=torch.int64)
        labels_hw[: mask.shape[0], : mask.shape[1]] = torch.from_numpy(mask.astype(np.int64))
        return {"pixel_values": to_pixel_values([resize_rgb(image, self.preprocess.size)], self.preprocess)[0],
                "labels_hw": labels_hw}


def label_sizes(labels_bhw: torch.Tensor) -> list[tuple[int, int]]:
    """Each label map's own ``(H, W)`` in a batch padded by :class:`EvalSubset` (bottom and right)."""
    valid = labels_bhw != PAD_INDEX
    return [(int(v.any(dim=1).sum()), int(v.any(dim=0).sum())) for v in valid]


def collate(samples: list[dict]) -> dict:
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def class_statistics(base: Dataset, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel frequency per class ``(K,)`` and which classes each index holds ``(N, K)`` (reads masks only)."""
    k = len(base.labels)
    counts = np.zeros(k, dtype=np.int64)
    present = np.zeros((len(indices), k), dtype=bool)
    for j, idx in enumerate(tqdm(indices, desc="class statistics", leave=False)):
        mask = base.read_mask(idx)
        hist = np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=256)[:k]
        counts += hist
        present[j] = hist > 0
    return counts / max(counts.sum(), 1), present


def holding(indices: Sequence[int], present: np.ndarray, class_ids: Sequence[int]) -> dict[int, list[int]]:
    """Class id -> the indices whose masks hold it (``present`` from :func:`class_statistics`)."""
    return {c: [i for i, here in zip(indices, present[:, c], strict=True) if here] for c in class_ids}


def balanced_class_weights(freq: np.ndarray, power: float = 0.5, max_weight: float = 10.0) -> torch.Tensor:
    """``(median / freq) ** power``, clipped: rare parts count more, absent ones nothing."""
    present = freq > 0
    weights = np.zeros_like(freq)
    weights[present] = (np.median(freq[present]) / freq[present]) ** power
    return torch.tensor(np.clip(weights, 0.0, max_weight), dtype=torch.float32)


def oversample(indices: Sequence[int], has_rare: np.ndarray, repeat: int) -> list[int]:
    """Repeat the images that hold a rare class ``repeat`` times in each epoch (``has_rare``: ``(N,)`` bool)."""
    return list(indices) + [i for i, rare in zip(indices, has_rare, strict=True) if rare] * max(repeat - 1, 0)
