"""Lip and hair recolouring from soft mattes.

1. Mattes: the model's class probabilities, upsampled and then refined against
   the photo with a guided filter, so that edges follow the photo's strands and
   lip borders rather than the model's 1/4-resolution grid. A soft threshold
   removes the faint tail that would tint skin (no halo) and teeth are excluded.
2. Colour: in CIE LAB the region's mean tone moves to the target's and its
   chroma (a, b) is replaced by the target's, while each pixel keeps its offset
   from the region's mean lightness: texture, strands and highlights survive.
3. Blend: ``out = photo + matte * intensity * (recoloured - photo)``; where the
   matte is 0 the photo is returned bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LIP_PARTS = ("u_lip", "l_lip")
HAIR_PARTS = ("hair",)
TEETH_PARTS = ("mouth",)


@dataclass(frozen=True)
class ColorRequest:
    rgb: tuple[int, int, int]
    intensity: float


def parse_hex_color(value: str) -> tuple[int, int, int]:
    """``#RRGGBB`` -> (r, g, b); ValueError with the accepted form otherwise."""
    text = value.strip()
    if len(text) != 7 or text[0] != "#":
        raise ValueError(f"colour {value!r} must look like #RRGGBB")
    try:
        return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
    except ValueError:
        raise ValueError(f"colour {value!r} must look like #RRGGBB (hex digits)") from None


def guided_filter(guide_hw: np.ndarray, src_hw: np.ndarray, radius: int, eps: float = 1e-3) -> np.ndarray:
    """He et al.'s guided filter with a grey guide; float32 arrays in [0, 1]."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x):
        return cv2.boxFilter(x, -1, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide_hw), box(src_hw)
    cov_ip = box(guide_hw * src_hw) - mean_i * mean_p
    var_i = box(guide_hw * guide_hw) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return np.clip(box(a) * guide_hw + box(b), 0.0, 1.0)


def refine_matte(prob_hw: np.ndarray, photo_gray_hw: np.ndarray, low: float = 0.15, high: float = 0.85) -> np.ndarray:
    """Edge-aware refinement, then a soft threshold: below ``low`` -> 0, above ``high`` -> 1."""
    radius = max(2, round(max(prob_hw.shape) / 200))
    refined = guided_filter(photo_gray_hw, prob_hw.astype(np.float32), radius)
    return np.clip((refined - low) / (high - low), 0.0, 1.0)


def _lab(rgb_hwc: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb_hwc.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def transfer_color(photo_hwc: np.ndarray, matte_hw: np.ndarray, target_rgb: tuple[int, int, int]) -> np.ndarray:
    """The photo recoloured everywhere (float32 RGB 0..255); the caller blends it by the matte."""
    lab = _lab(photo_hwc)
    target = _lab(np.array([[target_rgb]], dtype=np.uint8))[0, 0]
    weights = matte_hw / max(float(matte_hw.sum()), 1e-6)
    mean_l = float((lab[..., 0] * weights).sum())
    out = np.empty_like(lab)
    out[..., 0] = np.clip(lab[..., 0] + (target[0] - mean_l), 0, 100)  # tone moves, detail stays
    # chroma goes to the target's, keeping a little of the original variation for depth
    for c in (1, 2):
        mean_c = float((lab[..., c] * weights).sum())
        out[..., c] = target[c] + 0.25 * (lab[..., c] - mean_c)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB) * 255.0


def blend(photo_hwc: np.ndarray, recolored_hwc: np.ndarray, alpha_hw: np.ndarray) -> np.ndarray:
    """``photo + alpha * (recolored - photo)``, uint8; pixels with alpha 0 stay exactly as they were."""
    photo = photo_hwc.astype(np.float32)
    out = photo + alpha_hw[..., None] * (recolored_hwc - photo)
    out = np.clip(out.round(), 0, 255).astype(np.uint8)
    out[alpha_hw <= 0] = photo_hwc[alpha_hw <= 0]
    return out


def recolor(
    photo_hwc: np.ndarray, part_probs: dict[str, np.ndarray],
    lips: ColorRequest | None, hair: ColorRequest | None,
) -> np.ndarray:
    """Recolour lips and/or hair of ``photo_hwc`` (uint8 RGB) given full-size part probabilities.

    ``part_probs`` maps part names (``u_lip``, ``l_lip``, ``mouth``, ``hair``) to
    ``(H, W)`` float32 probabilities; missing parts count as 0.
    """
    gray = cv2.cvtColor(photo_hwc, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    zeros = np.zeros(photo_hwc.shape[:2], dtype=np.float32)

    def prob(parts):
        return sum((part_probs.get(p, zeros) for p in parts), zeros)

    out = photo_hwc
    if hair is not None:
        out = _apply(out, refine_matte(prob(HAIR_PARTS), gray), hair)
    if lips is not None:
        matte = refine_matte(prob(LIP_PARTS), gray) * (1.0 - refine_matte(prob(TEETH_PARTS), gray))
        out = _apply(out, matte, lips)
    return out


def _apply(photo_hwc: np.ndarray, matte_hw: np.ndarray, color: ColorRequest) -> np.ndarray:
    """Recolour only the bounding box of the matte (LAB conversions are the costly part)."""
    ys, xs = np.nonzero(matte_hw > 0)
    if ys.size == 0 or color.intensity <= 0:
        return photo_hwc
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    crop, matte = photo_hwc[box], matte_hw[box]
    out = photo_hwc.copy()
    out[box] = blend(crop, transfer_color(crop, matte, color.rgb), matte * color.intensity)
    return out
