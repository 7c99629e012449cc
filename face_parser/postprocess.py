"""MaskFormer outputs -> per-class probabilities -> label map, at any size.

MaskFormer answers with ``Q`` queries, each a class distribution
(``class_queries_logits``, ``(B, Q, K+1)``, the last column "no object") and a
mask (``masks_queries_logits``, ``(B, Q, h, w)`` at 1/4 of the input). The
semantic score of class ``k`` at a pixel is ``sum_q p_q(k) * sigmoid(m_q)``, the
same as ``MaskFormerImageProcessor.post_process_semantic_segmentation``; we also
normalise it over classes so that it is a probability the recolouring can blend
with.

Label maps larger than the score grid differ from the stock post-processing on
purpose: the scores are resized in log space (:func:`log_scores`), not as they
are. On a score grid at 1/4 of the input, a thin part (an eye, a lip, a brow) is
a few cells wide, and resizing the scores themselves lets a confident
neighbour's score spread into it; in log space the boundary falls where the
two classes' odds cross. On the validation split (L/R fixed) the shipped v3
went from per-image F 0.854 to 0.870 and pooled mean F1 0.813 to 0.826, the
small Mask2Former from 0.828 to 0.846 (README, "Resizing in log space").
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def semantic_scores(class_queries_logits: torch.Tensor, masks_queries_logits: torch.Tensor) -> torch.Tensor:
    """``(B, Q, K+1)`` and ``(B, Q, h, w)`` logits -> ``(B, K, h, w)`` unnormalised class scores."""
    class_probs_bqk = class_queries_logits.float().softmax(dim=-1)[..., :-1]
    mask_probs_bqhw = masks_queries_logits.float().sigmoid()
    return torch.einsum("bqk,bqhw->bkhw", class_probs_bqk, mask_probs_bqhw)


SCORE_FLOOR = 1e-12  # scores below it count as it in log space (they never decide a pixel)


def log_scores(scores: torch.Tensor) -> torch.Tensor:
    """Class scores -> their logarithms (float32): the space that label maps are resized in (module docstring)."""
    return scores.float().clamp_min(SCORE_FLOOR).log()


def resized(maps_bchw: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Per-class maps ``(B, C, h, w)`` -> ``(B, C, H, W)``, bilinearly (not at all without a size or at the same)."""
    if size is None or tuple(maps_bchw.shape[-2:]) == tuple(size):
        return maps_bchw
    return F.interpolate(maps_bchw, size=size, mode="bilinear", align_corners=False)


def resized_log_scores(scores_bkhw: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """``(B, K, h, w)`` scores -> ``(B, K, H, W)`` log scores, resized bilinearly."""
    return resized(log_scores(scores_bkhw), size)


def class_probabilities(scores_bkhw: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Scores ``(B, K, h, w)`` -> probabilities ``(B, K, H, W)`` float32 in [0, 1], summing to 1 per pixel.

    Resized in log space, as :func:`label_map` is, so their argmax is its label map.
    """
    return resized_log_scores(scores_bkhw, size).softmax(dim=1)


LOGIT_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before their log-odds (float32 keeps 1 - 1e-6)


def chosen_probabilities(scores_bkhw: torch.Tensor, class_ids: list[int], size: tuple[int, int]) -> torch.Tensor:
    """The probabilities ``(B, len(class_ids), H, W)`` of a few classes (recolouring: lips, hair), each resized
    on its own as its log-odds against all the other classes: normalised on the score grid, where every class
    is at hand, so that the other classes are never resized. A class's > 0.5 region then ends where its label
    does (exactly, with two classes): the log-odds are the difference of the two log scores that
    :func:`label_map` compares. Probabilities within ``LOGIT_EPS`` of 0 or 1 come back as 0 or 1."""
    return probabilities_from_log_odds(resized(log_odds(class_probabilities(scores_bkhw)[:, class_ids]), size))


def log_odds(probs: torch.Tensor) -> torch.Tensor:
    """Probabilities -> their log-odds, clamped to ``[LOGIT_EPS, 1 - LOGIT_EPS]`` first."""
    return torch.logit(probs, eps=LOGIT_EPS)


def probabilities_from_log_odds(log_odds: torch.Tensor) -> torch.Tensor:
    """Resized log-odds -> probabilities; within twice ``LOGIT_EPS`` of 0 or 1 (the clamp, and float rounding
    in the resize) they are 0 or 1: a class absent all around a pixel is absent there."""
    probs = log_odds.sigmoid()
    return torch.where(probs < 2 * LOGIT_EPS, 0.0, torch.where(probs > 1 - 2 * LOGIT_EPS, 1.0, probs))


def label_map(scores_bkhw: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Scores ``(B, K, h, w)`` -> class ids ``(B, H, W)`` uint8 (argmax after a bilinear resize in log space)."""
    # max().indices, not argmax(): same first-maximum answer, but argmax over a non-innermost dim is
    # ~6x slower on CPU (48 vs 8 ms for 19 x 512 x 512), which was most of a request's post-processing
    return resized_log_scores(scores_bkhw, size).max(dim=1).indices.to(torch.uint8)


def image_label_map(scores_khw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One image's :func:`label_map`: scores ``(K, h, w)`` -> class ids ``(H, W)`` uint8, 3-8x cheaper on CPU.

    Bilinear interpolation (of the log scores) mixes the 4 source pixels around an
    output pixel with non-negative weights, so where those 4 share their argmax, the
    output pixel has it too: only cells on a class boundary (~15% for a face) are
    interpolated, and there only the classes that can win (highest corner >= every
    class's lowest). Same answer as ``label_map(scores_khw[None], size)[0]`` but where
    two classes tie to float rounding.
    """
    scores = log_scores(scores_khw).numpy()
    _, h, w = scores.shape
    height, width = size
    y0, fy = _source_index(height, h)
    x0, fx = _source_index(width, w)
    below, right = np.minimum(np.arange(h) + 1, h - 1), np.minimum(np.arange(w) + 1, w - 1)
    low_hw = scores.argmax(axis=0)
    uniform_hw = (low_hw == low_hw[below]) & (low_hw == low_hw[:, right]) & (low_hw == low_hw[below][:, right])
    labels_hw = low_hw.astype(np.uint8)[y0][:, x0]
    row_start, row_end = np.searchsorted(y0, np.arange(h)), np.searchsorted(y0, np.arange(h), "right")
    col_start, col_end = np.searchsorted(x0, np.arange(w)), np.searchsorted(x0, np.arange(w), "right")
    ci, cj = np.nonzero(~uniform_hw & (row_end > row_start)[:, None] & (col_end > col_start)[None, :])
    if ci.size == 0:
        return torch.from_numpy(labels_hw)
    scores_hwk = scores.transpose(1, 2, 0)
    corners_m4k = np.stack([scores_hwk[ci, cj], scores_hwk[ci, right[cj]],
                            scores_hwk[below[ci], cj], scores_hwk[below[ci], right[cj]]], axis=1)
    floor_m1 = corners_m4k.min(axis=1).max(axis=1, keepdims=True)
    can_win_mk = corners_m4k.max(axis=1) >= floor_m1
    n_cand = int(can_win_mk.sum(axis=1).max())
    cand_mn = np.argsort(~can_win_mk, axis=1, kind="stable")[:, :n_cand]  # candidates first, by class id
    cand_m4n = np.take_along_axis(corners_m4k, cand_mn[:, None, :], axis=2)
    # cells with fewer candidates are padded with a constant that never wins
    padding = (floor_m1 - np.abs(floor_m1) - 1)[:, :, None]
    cand_m4n = np.where(np.take_along_axis(can_win_mk, cand_mn, axis=1)[:, None, :], cand_m4n, padding)
    # each cell's block of output pixels, padded to the largest block
    block_h, block_w = int((row_end - row_start)[ci].max()), int((col_end - col_start)[cj].max())
    rows_mb = row_start[ci][:, None] + np.arange(block_h)
    cols_mb = col_start[cj][:, None] + np.arange(block_w)
    in_block = (rows_mb < row_end[ci][:, None])[:, :, None] & (cols_mb < col_end[cj][:, None])[:, None, :]
    rows_mb, cols_mb = np.minimum(rows_mb, height - 1), np.minimum(cols_mb, width - 1)
    wy1, wx1 = fy[rows_mb][:, :, None], fx[cols_mb][:, None, :]
    wy0, wx0 = np.float32(1) - wy1, np.float32(1) - wx1
    best_val = best_id = None
    for c in range(n_cand):  # running argmax; ">" keeps the lower class id on ties, as argmax does
        v00, v01, v10, v11 = (cand_m4n[:, k, c][:, None, None] for k in range(4))
        val = wy0 * (wx0 * v00 + wx1 * v01) + wy1 * (wx0 * v10 + wx1 * v11)  # torch's bilinear formula
        class_id = cand_mn[:, c][:, None, None]
        if best_id is None:
            best_val, best_id = val, np.broadcast_to(class_id, val.shape)
        else:
            better = val > best_val
            best_val, best_id = np.where(better, val, best_val), np.where(better, class_id, best_id)
    assert best_id is not None  # n_cand >= 1: the class that holds floor_m1 can always win
    rows = np.broadcast_to(rows_mb[:, :, None], in_block.shape)[in_block]
    cols = np.broadcast_to(cols_mb[:, None, :], in_block.shape)[in_block]
    labels_hw[rows, cols] = best_id[in_block]
    return torch.from_numpy(labels_hw)


def _source_index(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output row (or column): its first source index and the second one's weight, as torch's
    bilinear ``align_corners=False`` computes them in float32 (the second index is the next one, clamped)."""
    scale = np.float32(in_size / out_size)
    src = np.maximum((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    first = np.minimum(src.astype(np.intp), in_size - 1)
    return first, (src - first).astype(np.float32)


def bounded_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` shrunk (aspect kept) so that its longer side is at most ``max_side``."""
    height, width = size
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def enlarge_labels(labels_hw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class ids ``(h, w)`` uint8 -> ``(H, W)`` uint8 by nearest neighbour (no-op at the same size).

    ``nearest-exact``: each output pixel takes the label under its centre, as every other resize here
    maps centres; torch's ``nearest`` looks from the pixel's corner and shifts the map half a pixel.
    """
    if tuple(labels_hw.shape) == tuple(size):
        return labels_hw
    return F.interpolate(labels_hw[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(torch.uint8)


def label_map_bounded(scores_khw: torch.Tensor, size: tuple[int, int], max_side: int = 2048) -> torch.Tensor:
    """Label map ``(H, W)`` uint8 for one image, with memory bounded for very large photos.

    Up to ``max_side`` the scores are resized bilinearly to ``size``; beyond it the
    label map is computed at ``max_side`` and enlarged by nearest neighbour, so a
    40-megapixel photo never needs ``K x 40M`` floats.
    """
    labels_hw = image_label_map(scores_khw, bounded_size(size, max_side))
    return enlarge_labels(labels_hw, size)
