"""MaskFormer outputs -> per-class probabilities -> label map, at any size.

MaskFormer answers with ``Q`` queries, each a class distribution
(``class_queries_logits``, ``(B, Q, K+1)``, the last column "no object") and a
mask (``masks_queries_logits``, ``(B, Q, h, w)`` at 1/4 of the input). The
semantic score of class ``k`` at a pixel is ``sum_q p_q(k) * sigmoid(m_q)``, the
same as ``MaskFormerImageProcessor.post_process_semantic_segmentation``; we also
normalise it over classes so that it is a probability the recolouring can blend
with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def semantic_scores(class_queries_logits: torch.Tensor, masks_queries_logits: torch.Tensor) -> torch.Tensor:
    """``(B, Q, K+1)`` and ``(B, Q, h, w)`` logits -> ``(B, K, h, w)`` unnormalised class scores."""
    class_probs_bqk = class_queries_logits.float().softmax(dim=-1)[..., :-1]
    mask_probs_bqhw = masks_queries_logits.float().sigmoid()
    return torch.einsum("bqk,bqhw->bkhw", class_probs_bqk, mask_probs_bqhw)


def class_probabilities(scores_bkhw: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Scores ``(B, K, h, w)`` -> probabilities ``(B, K, H, W)`` float32 in [0, 1], summing to 1 per pixel.

    Resizing is bilinear on the scores, before normalising, which keeps the argmax
    identical to the stock post-processing at the same size.
    """
    if size is not None and tuple(scores_bkhw.shape[-2:]) != tuple(size):
        scores_bkhw = F.interpolate(scores_bkhw, size=size, mode="bilinear", align_corners=False)
    return scores_bkhw / scores_bkhw.sum(dim=1, keepdim=True).clamp_min(1e-6)


def label_map(scores_bkhw: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Scores ``(B, K, h, w)`` -> class ids ``(B, H, W)`` uint8 (argmax after a bilinear resize)."""
    if size is not None and tuple(scores_bkhw.shape[-2:]) != tuple(size):
        scores_bkhw = F.interpolate(scores_bkhw, size=size, mode="bilinear", align_corners=False)
    return scores_bkhw.argmax(dim=1).to(torch.uint8)


def label_map_bounded(scores_khw: torch.Tensor, size: tuple[int, int], max_side: int = 2048) -> torch.Tensor:
    """Label map ``(H, W)`` uint8 for one image, with memory bounded for very large photos.

    Up to ``max_side`` the scores are resized bilinearly to ``size``; beyond it the
    label map is computed at ``max_side`` and enlarged by nearest neighbour, so a
    40-megapixel photo never needs ``K x 40M`` floats.
    """
    height, width = size
    scale = min(1.0, max_side / max(height, width))
    inner = (max(1, round(height * scale)), max(1, round(width * scale)))
    labels_hw = label_map(scores_khw[None], size=inner)[0]
    if inner != (height, width):
        labels_hw = F.interpolate(labels_hw[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    return labels_hw
