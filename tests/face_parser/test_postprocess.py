"""The service's one-image label map equals the batched reference wherever the answer is not a float tie."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from face_parser.postprocess import image_label_map, label_map, label_map_bounded, semantic_scores


def face_like_scores(seed: int, classes: int = 19, side: int = 16) -> torch.Tensor:
    """``(K, side, side)`` scores with blob-shaped regions, as MaskFormer's (non-negative, smooth)."""
    torch.manual_seed(seed)
    logits = F.interpolate(torch.randn(1, classes, 4, 4) * 4, size=(side, side), mode="bilinear")
    return semantic_scores(torch.randn(1, classes, classes + 1), logits)[0]


def assert_same_labels(scores_khw: torch.Tensor, size: tuple[int, int]) -> None:
    """Equal to ``label_map`` except where its two best interpolated scores tie to float rounding."""
    fast = image_label_map(scores_khw, size)
    reference = label_map(scores_khw[None], size)[0]
    assert fast.shape == reference.shape == size and fast.dtype == torch.uint8
    up = F.interpolate(scores_khw[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    top2 = up.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-5 * top2[0].abs().clamp_min(1)
    assert torch.equal(fast[clear], reference[clear])


@pytest.mark.parametrize("size", [(128, 128), (150, 97), (16, 16), (7, 33), (1, 1), (300, 41)])
def test_image_label_map_matches_label_map(size):
    for seed in range(3):
        assert_same_labels(face_like_scores(seed), size)


def test_image_label_map_on_noise_and_odd_shapes():
    torch.manual_seed(1)
    for scores in (torch.rand(19, 16, 16), torch.rand(3, 5, 7), torch.rand(4, 1, 1), torch.rand(2, 1, 9).half()):
        for size in ((64, 64), (5, 90), (3, 2)):
            assert_same_labels(scores.float(), size)


def test_label_map_bounded_enlarges_past_max_side():
    scores = face_like_scores(0)
    labels = label_map_bounded(scores, (300, 200), max_side=150)
    assert labels.shape == (300, 200)
    small = image_label_map(scores, (150, 100))
    assert torch.equal(labels[::2, ::2], small)
