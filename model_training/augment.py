"""Face-aware augmentation: one affine warp straight to the model's input size.

Scale, rotation and translation are composed into a single PIL affine
transform (bilinear for the photo, nearest for the mask). Where it shrinks, the
photo is first resized with antialiasing to the warp's scale, as evaluation and
serving resize it. A horizontal flip also swaps left/right classes. Colour jitter
changes brightness, contrast and saturation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from model_training.datasets.base import IGNORE_INDEX


@dataclass(frozen=True)
class AugmentConfig:
    size: int = 256
    min_scale: float = 0.8   # < 1 zooms out: the face fills less of the frame
    max_scale: float = 1.2
    max_rotate_deg: float = 15.0
    max_translate: float = 0.08  # fraction of the output size
    flip_prob: float = 0.5
    color_jitter: float = 0.25


def _inverse_affine(in_w: int, in_h: int, cfg: AugmentConfig, rng: np.random.Generator) -> tuple:
    """Coefficients mapping output pixels back to input pixels (what PIL's AFFINE wants)."""
    scale = cfg.size / max(in_w, in_h) * rng.uniform(cfg.min_scale, cfg.max_scale)
    angle = math.radians(rng.uniform(-cfg.max_rotate_deg, cfg.max_rotate_deg))
    tx, ty = rng.uniform(-cfg.max_translate, cfg.max_translate, size=2) * cfg.size
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    ox, oy = cfg.size / 2 + tx, cfg.size / 2 + ty
    # input = R^-1 S^-1 (output - out_centre) + in_centre
    return (cos, sin, in_w / 2 - cos * ox - sin * oy, -sin, cos, in_h / 2 + sin * ox - cos * oy)


def _jitter(image_hwc: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    img = image_hwc.astype(np.float32)
    brightness, contrast, saturation = 1 + rng.uniform(-strength, strength, size=3)
    gray = img.mean(axis=2, keepdims=True)
    img = gray + (img - gray) * saturation
    img = (img - img.mean()) * contrast + img.mean()
    return np.clip(img * brightness, 0, 255).astype(np.uint8)


def _antialiased(photo: Image.Image, coeffs: tuple) -> tuple[Image.Image, tuple]:
    """The photo shrunk (antialiased) to the warp's scale, and the warp from there, when it shrinks.

    An affine warp samples the input bilinearly at each output pixel and does not low-pass filter, so
    a warp that shrinks 512 px to the model's size would train on sharper, aliased pictures than the
    antialiased resize (``face_parser.preprocess.resize_rgb``) that evaluation and serving feed the
    model. The warp left after the shrink only rotates and shifts, at about 1x.
    """
    a, b, c, d, e, f = coeffs
    scale = 1 / math.hypot(a, b)  # output pixels per input pixel
    if scale >= 1:
        return photo, coeffs
    w, h = photo.size
    small = photo.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    kx, ky = small.width / w, small.height / h
    return small, (a * kx, b * kx, c * kx, d * ky, e * ky, f * ky)


def augment_pair(
    image_hwc: np.ndarray, mask_hw: np.ndarray, cfg: AugmentConfig,
    flip_permutation: np.ndarray, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Random warp + flip + jitter -> ``(S, S, 3)`` uint8 image and ``(S, S)`` uint8 mask."""
    h, w = mask_hw.shape
    coeffs = _inverse_affine(w, h, cfg, rng)
    size = (cfg.size, cfg.size)
    photo, photo_coeffs = _antialiased(Image.fromarray(image_hwc), coeffs)
    image = np.asarray(photo.transform(size, Image.AFFINE, photo_coeffs, Image.BILINEAR))
    mask = np.asarray(Image.fromarray(mask_hw).transform(size, Image.AFFINE, coeffs, Image.NEAREST))
    if rng.random() < cfg.flip_prob:
        image = image[:, ::-1]
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[: len(flip_permutation)] = flip_permutation
        mask = lut[mask[:, ::-1]]
    if cfg.color_jitter > 0:
        image = _jitter(image, cfg.color_jitter, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)
