"""Photo -> model input. The one preprocessing used by training, evaluation and serving.

It matches the exported ``preprocessor_config.json`` (bilinear resize to a fixed
square, rescale to [0, 1], normalise by mean/std), so a stock Hugging Face image
processor loaded from the model folder sees the same tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """Input geometry and normalisation of a model."""

    size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_processor_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        """Read a ``preprocessor_config.json`` dict (``size`` as ``{height, width}``)."""
        size = d.get("size", {})
        height = size.get("height") if isinstance(size, Mapping) else size
        width = size.get("width", height) if isinstance(size, Mapping) else size
        if not height or height != width:
            raise ValueError(f"expected a square input size {{height, width}}, got size={size!r}")
        return cls(int(height), tuple(d.get("image_mean", IMAGENET_MEAN)), tuple(d.get("image_std", IMAGENET_STD)))

    def to_processor_dict(self) -> dict[str, Any]:
        """The stock ``MaskFormerImageProcessor`` settings that reproduce this preprocessing."""
        return {
            "do_resize": True,
            "size": {"height": self.size, "width": self.size},
            "resample": 2,  # PIL.Image.BILINEAR
            "size_divisor": 32,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "ignore_index": 255,
            "do_reduce_labels": False,
        }


def resize_rgb(image_hwc: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 RGB array to ``(size, size, 3)`` uint8 (bilinear).

    Done per image, before batching, so that the batched section only stacks.
    """
    if image_hwc.shape[:2] == (size, size):
        return image_hwc
    return np.asarray(Image.fromarray(image_hwc).resize((size, size), Image.Resampling.BILINEAR))


def stack_rgb(images_hwc: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Resize (where needed) and stack RGB photos into ``(B, 3, S, S)`` uint8, a channels-last view.

    This is the form a batch travels to the model's device in: a quarter of float32's bytes, and on a
    GPU the normalising then runs there (:func:`normalise`).
    """
    return torch.from_numpy(np.stack([resize_rgb(im, size) for im in images_hwc])).permute(0, 3, 1, 2)


def normalise(batch_b3ss: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> normalised float32 on the batch's own device, in one fused pass.

    ``x * 1/(255 std) - mean/std`` is ``(x / 255 - mean) / std`` to float rounding (< 1e-6), without the
    three temporary batches of the four-step form: on 2 CPU cores 0.21-0.30 ms a photo at 384 px
    (``benchmarks.model_speed``), about 0.6x the four-step form's time.
    """
    std = torch.tensor(config.std, device=batch_b3ss.device).view(1, 3, 1, 1)
    mean = torch.tensor(config.mean, device=batch_b3ss.device).view(1, 3, 1, 1)
    return torch.addcmul(-mean / std, batch_b3ss.float(), 1 / (255 * std))


def to_pixel_values(images_hwc: Sequence[np.ndarray], config: PreprocessConfig) -> torch.Tensor:
    """RGB photos ``(H, W, 3)`` uint8 -> normalised ``(B, 3, S, S)`` float32 on the CPU."""
    return normalise(stack_rgb(images_hwc, config.size), config)
