"""Lip and hair recolouring from soft mattes.

1. Mattes: the model's decision for a part (probability > 0.5, upsampled from its
   1/4-resolution grid) is feathered with a colour guided filter against the photo,
   so that edges follow the photo's strands and lip borders within a few pixels
   and never spread onto skin (no halo); a soft threshold cuts the faint tail and
   the inner mouth (teeth) is excluded from the lips.
2. Colour, in CIE LAB: lightness = base (local mean) + detail. The base moves to
   the target's tone with a soft roll-off that keeps headroom, the detail is added
   back unchanged, so strands and highlights survive even dark -> light; chroma
   becomes the target's (the hue moves fully at intensity 1), reduced only where
   the colour would leave the sRGB gamut.
3. Lip finish, from the photo's own lighting: the sheen (lightness above the lips'
   broad matte-weighted mean, i.e. their highlights) is compressed for ``matte``,
   kept and slightly raised for ``satin``, expanded and whitened for ``gloss``;
   ``natural`` leaves it as photographed. No highlight is drawn or pasted.
4. Blend: ``out = photo + matte * intensity * (recoloured - photo)``; where the
   matte is 0 the photo is returned bit for bit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

LIP_PARTS = ("u_lip", "l_lip")
HAIR_PARTS = ("hair",)
TEETH_PARTS = ("mouth",)
HEX_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")

LOW, HIGH = 0.3, 0.9  # soft threshold of the feathered decision
GUIDE_RADIUS = 0.01  # guided-filter radius as a share of the photo's longer side (5 px at 512)
GUIDE_EPS = 1e-4  # guided-filter regularisation (guide in [0, 1]): smaller follows fainter edges
GUIDE_MAX_SIDE = 1024  # larger photos fit the guided filter's coefficients at a reduced size
# The shifted tone (CIE L) rolls off over a knee towards a floor and a ceiling; the ceiling leaves
# headroom for the detail added on top, so highlights of dark hair turned blonde do not clip.
L_FLOOR, L_KNEE_LOW, L_CEIL, L_KNEE_HIGH = 2.0, 6.0, 88.0, 20.0
CHROMA_VARIATION = 0.25  # share of the original a/b variation kept around the target's chroma

LipFinish = Literal["natural", "matte", "satin", "gloss"]
LIP_FINISHES: tuple[LipFinish, ...] = ("natural", "matte", "satin", "gloss")
# gain on the sheen (lightness above the lips' broad mean): < 1 flattens the highlights, > 1 expands them
SHEEN_GAIN: dict[str, float] = {"natural": 1.0, "matte": 0.2, "satin": 1.4, "gloss": 2.4}
SHEEN_WHITENING = 1 / 40  # gloss: chroma lost per unit of added sheen (CIE L), as light reflects white

# sRGB (D65) primaries; the white point matches OpenCV's LAB conversion
_D65_WHITE = np.array([0.950456, 1.0, 1.088754], np.float32)
_XYZ_TO_LINEAR_RGB = np.array([[3.240479, -1.53715, -0.498535],
                               [-0.969256, 1.875991, 0.041556],
                               [0.055648, -0.204043, 1.057311]], np.float32)


@dataclass(frozen=True)
class ColorRequest:
    rgb: tuple[int, int, int]
    intensity: float
    finish: LipFinish = "natural"


def needed_parts(lips: ColorRequest | None, hair: ColorRequest | None) -> tuple[str, ...]:
    """The parsed parts whose probabilities :func:`part_mattes` needs for these requests."""
    return (LIP_PARTS + TEETH_PARTS if lips else ()) + (HAIR_PARTS if hair else ())


def parse_hex_color(value: str) -> tuple[int, int, int]:
    """``#RRGGBB`` -> (r, g, b); ValueError with the accepted form otherwise."""
    text = value.strip()
    if not HEX_COLOR.fullmatch(text):  # int(..., 16) alone would take "-1", "+a" and " a"
        raise ValueError(f"colour {value!r} must look like #RRGGBB (six hex digits)")
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


def guided_filter(guide: np.ndarray, src_hw: np.ndarray, radius: int, eps: float = 1e-3,
                  subsample: int = 1) -> np.ndarray:
    """He et al.'s guided filter; ``guide`` ``(H, W)`` or ``(H, W, C)`` and ``src_hw`` float32 in [0, 1].

    With a colour guide each window fits ``src ~ a . guide + b`` over all channels, which tells hair
    from skin or lips from skin where their grey levels match. ``subsample > 1`` is the fast variant:
    the coefficients are fitted at ``1/subsample`` of the size and applied to the full-size guide, so
    edges still follow the full-resolution photo.
    """
    guide_hwc = (guide[..., None] if guide.ndim == 2 else guide).astype(np.float32)
    small_guide: np.ndarray = guide_hwc
    small_src: np.ndarray = src_hw.astype(np.float32)
    r = radius
    if subsample > 1:
        size = (max(1, guide_hwc.shape[1] // subsample), max(1, guide_hwc.shape[0] // subsample))
        small_guide = cv2.resize(guide_hwc, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        small_src = cv2.resize(small_src, size, interpolation=cv2.INTER_AREA)
        r = max(1, round(radius / subsample))
    ksize = (2 * r + 1, 2 * r + 1)

    def box(x):
        return cv2.boxFilter(x, -1, ksize, borderType=cv2.BORDER_REFLECT)

    channels = small_guide.shape[-1]
    mean_i = np.dstack([box(small_guide[..., c]) for c in range(channels)])
    mean_p = box(small_src)
    cov_ip = np.dstack([box(small_guide[..., c] * small_src) for c in range(channels)]) - mean_i * mean_p[..., None]
    sigma = np.empty(small_src.shape + (channels, channels), np.float32)
    for i in range(channels):
        for j in range(i, channels):
            sigma[..., i, j] = sigma[..., j, i] = (box(small_guide[..., i] * small_guide[..., j])
                                                   - mean_i[..., i] * mean_i[..., j])
    sigma += eps * np.eye(channels, dtype=np.float32)
    a = np.linalg.solve(sigma, cov_ip[..., None])[..., 0]
    b = mean_p - (a * mean_i).sum(axis=-1)
    mean_a = np.dstack([box(a[..., c]) for c in range(channels)])
    mean_b = box(b)
    if subsample > 1:
        full = (guide_hwc.shape[1], guide_hwc.shape[0])
        mean_a = cv2.resize(mean_a, full, interpolation=cv2.INTER_LINEAR).reshape(guide_hwc.shape)
        mean_b = cv2.resize(mean_b, full, interpolation=cv2.INTER_LINEAR)
    return np.clip((mean_a * guide_hwc).sum(axis=-1) + mean_b, 0.0, 1.0)


def refine_matte(prob_hw: np.ndarray, photo_hwc: np.ndarray, low: float = LOW, high: float = HIGH) -> np.ndarray:
    """Probability -> matte in [0, 1] whose edges follow the photo ("feathering", He et al. 2010).

    The model's decision (``prob > 0.5``) is smoothed by a guided filter against ``photo_hwc`` (float32
    RGB in [0, 1]), so the matte's edges move onto the photo's strands and lip borders within a few
    pixels; the soft threshold (``low`` -> 0, ``high`` -> 1) then keeps the faint tail off the skin.
    Filtering the decision rather than the probability matters: the probability is upsampled from a
    1/4-resolution grid and its ramp spreads further than any edge-aware filter can pull back.
    Only the box around the part (plus a margin) is filtered.
    """
    matte = np.zeros(prob_hw.shape, np.float32)
    decision = prob_hw > 0.5
    ys, xs = np.nonzero(decision)
    if ys.size == 0:
        return matte
    side = max(prob_hw.shape)
    radius = max(2, round(side * GUIDE_RADIUS))
    margin = 2 * radius
    box = (slice(max(0, ys.min() - margin), ys.max() + margin + 1),
           slice(max(0, xs.min() - margin), xs.max() + margin + 1))
    subsample = max(1, side // GUIDE_MAX_SIDE)
    refined = guided_filter(photo_hwc[box], decision[box].astype(np.float32), radius, GUIDE_EPS, subsample)
    matte[box] = np.clip((refined - low) / (high - low), 0.0, 1.0)
    return matte


def _lab(rgb_hwc: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb_hwc.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _lab_to_linear_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE LAB (D65) -> linear sRGB, unclipped (cv2 clips, which hides out-of-gamut colours)."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _D65_WHITE
    return xyz @ _XYZ_TO_LINEAR_RGB.T


def _into_gamut(lab: np.ndarray, steps: int = 8) -> np.ndarray:
    """Scale the chroma of out-of-sRGB-gamut pixels down (bisection) until they fit; L and hue stay.

    Clipping RGB channels instead would flatten bright strands and bend the hue.
    """
    rgb = _lab_to_linear_rgb(lab)
    out_of_gamut = ((rgb < -1e-4) | (rgb > 1 + 1e-4)).any(axis=-1)
    if not out_of_gamut.any():
        return lab
    sub = lab[out_of_gamut]
    lo, hi = np.zeros(len(sub), np.float32), np.ones(len(sub), np.float32)
    for _ in range(steps):
        mid = (lo + hi) / 2
        trial = np.column_stack([sub[:, 0], sub[:, 1] * mid, sub[:, 2] * mid])
        rgb = _lab_to_linear_rgb(trial)
        fits = ((rgb >= -1e-4) & (rgb <= 1 + 1e-4)).all(axis=-1)
        lo, hi = np.where(fits, mid, lo), np.where(fits, hi, mid)
    out = lab.copy()
    out[out_of_gamut, 1:] = sub[:, 1:] * lo[:, None]
    return out


def _soft_limit(x: np.ndarray) -> np.ndarray:
    """Identity on ``[L_FLOOR + L_KNEE_LOW, L_CEIL - L_KNEE_HIGH]``, rolling off smoothly towards the limits."""
    top, bottom = L_CEIL - L_KNEE_HIGH, L_FLOOR + L_KNEE_LOW
    x = np.where(x > top, top + L_KNEE_HIGH * np.tanh((x - top) / L_KNEE_HIGH), x)
    return np.where(x < bottom, bottom - L_KNEE_LOW * np.tanh((bottom - x) / L_KNEE_LOW), x)


def transfer_color(photo_hwc: np.ndarray, matte_hw: np.ndarray, target_rgb: tuple[int, int, int],
                   finish: LipFinish = "natural") -> np.ndarray:
    """The photo recoloured everywhere (float32 RGB 0..255); the caller blends it by the matte.

    Lightness is split into a base (matte-weighted local mean over a few pixels) and detail (the
    rest: strands, pores, highlights' edges). The base moves so that its matte-weighted mean is the
    target's lightness and is then softly limited to ``[L_FLOOR, L_CEIL]``; the detail is added back
    unchanged, so dark hair turned blonde keeps its strands instead of clipping to a flat patch.
    Chroma (a, b) becomes the target's plus a quarter of the original variation for depth, scaled
    down where the colour would leave the sRGB gamut. ``finish`` rescales the sheen (see the module
    docstring).
    """
    lab = _lab(photo_hwc)
    target = _lab(np.array([[target_rgb]], dtype=np.uint8))[0, 0]
    weight = matte_hw.astype(np.float32)
    total = max(float(weight.sum()), 1e-6)
    sigma = max(1.5, max(photo_hwc.shape[:2]) / 256)
    lightness = lab[..., 0]
    blurred_weight = cv2.GaussianBlur(weight, (0, 0), sigma)
    base = cv2.GaussianBlur(lightness * weight, (0, 0), sigma) / np.maximum(blurred_weight, 1e-6)
    base = np.where(blurred_weight > 1e-3, base, lightness)
    detail = lightness - base
    new_base = _soft_limit(base + (target[0] - float((base * weight).sum()) / total))
    out = np.empty_like(lab)
    added = (SHEEN_GAIN[finish] - 1.0) * _sheen(lightness, weight, total) if finish != "natural" else 0.0
    out[..., 0] = np.clip(new_base + detail + added, 0.0, 100.0)
    chroma_scale = np.clip(1.0 - np.maximum(added, 0.0) * SHEEN_WHITENING, 0.3, 1.0)
    for c in (1, 2):
        mean_c = float((lab[..., c] * weight).sum()) / total
        out[..., c] = (target[c] + CHROMA_VARIATION * (lab[..., c] - mean_c)) * chroma_scale
    return cv2.cvtColor(_into_gamut(out), cv2.COLOR_LAB2RGB) * 255.0


def _sheen(lightness_hw: np.ndarray, weight_hw: np.ndarray, total: float) -> np.ndarray:
    """Lightness above the part's broad matte-weighted mean (>= 0): its highlights, as lit in the photo.

    The broad scale follows the part's size (a sixth of the side of a square of its area), so a
    highlight a few pixels wide on the lower lip counts whole instead of as edge detail.
    """
    sigma = max(2.0, float(np.sqrt(total)) / 6)
    blurred_weight = cv2.GaussianBlur(weight_hw, (0, 0), sigma)
    broad = cv2.GaussianBlur(lightness_hw * weight_hw, (0, 0), sigma) / np.maximum(blurred_weight, 1e-6)
    return np.where(blurred_weight > 1e-3, np.maximum(lightness_hw - broad, 0.0), 0.0)


def blend(photo_hwc: np.ndarray, recolored_hwc: np.ndarray, alpha_hw: np.ndarray) -> np.ndarray:
    """``photo + alpha * (recolored - photo)``, uint8; pixels with alpha 0 stay exactly as they were."""
    photo = photo_hwc.astype(np.float32)
    out = photo + alpha_hw[..., None] * (recolored_hwc - photo)
    out = np.clip(out.round(), 0, 255).astype(np.uint8)
    out[alpha_hw <= 0] = photo_hwc[alpha_hw <= 0]
    return out


def part_mattes(photo_hwc: np.ndarray, part_probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Refined ``(H, W)`` float32 mattes in [0, 1], ``{"lips": ..., "hair": ...}``, of ``photo_hwc`` (uint8 RGB).

    ``part_probs`` maps part names (``u_lip``, ``l_lip``, ``mouth``, ``hair``) to
    full-size ``(H, W)`` float32 probabilities; missing parts count as 0. The lip
    matte excludes the inner mouth (teeth).
    """
    guide = photo_hwc.astype(np.float32) / 255.0
    zeros = np.zeros(photo_hwc.shape[:2], dtype=np.float32)

    def prob(parts):
        return sum((part_probs.get(p, zeros) for p in parts), zeros)

    lips = refine_matte(prob(LIP_PARTS), guide) * (1.0 - refine_matte(prob(TEETH_PARTS), guide))
    return {"lips": lips, "hair": refine_matte(prob(HAIR_PARTS), guide)}


def recolor(
    photo_hwc: np.ndarray, part_probs: dict[str, np.ndarray],
    lips: ColorRequest | None, hair: ColorRequest | None,
) -> np.ndarray:
    """Recolour lips and/or hair of ``photo_hwc`` (uint8 RGB) given full-size part probabilities."""
    return recolor_with_mattes(photo_hwc, part_mattes(photo_hwc, part_probs), lips, hair)


def recolor_with_mattes(
    photo_hwc: np.ndarray, mattes: dict[str, np.ndarray],
    lips: ColorRequest | None, hair: ColorRequest | None,
) -> np.ndarray:
    """Recolour with mattes from :func:`part_mattes` (reusable across colour choices)."""
    out = photo_hwc
    if hair is not None:
        out = _apply(out, mattes["hair"], hair)
    if lips is not None:
        out = _apply(out, mattes["lips"], lips)
    return out


def _apply(photo_hwc: np.ndarray, matte_hw: np.ndarray, color: ColorRequest) -> np.ndarray:
    """Recolour only the bounding box of the matte (LAB conversions are the costly part)."""
    ys, xs = np.nonzero(matte_hw > 0)
    if ys.size == 0 or color.intensity <= 0:
        return photo_hwc
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    crop, matte = photo_hwc[box], matte_hw[box]
    out = photo_hwc.copy()
    out[box] = blend(crop, transfer_color(crop, matte, color.rgb, color.finish), matte * color.intensity)
    return out
