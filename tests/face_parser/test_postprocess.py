"""Label maps are resized in log space, and the service's one-image label map equals the batched reference
wherever the answer is not a float tie."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from face_parser.postprocess import (
    chosen_probabilities,
    class_probabilities,
    enlarge_labels,
    image_label_map,
    label_map,
    label_map_bounded,
    resized_log_scores,
    semantic_scores,
)


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
    up = resized_log_scores(scores_khw[None], size)[0]
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


def test_enlarged_labels_stay_centred():
    """Each pixel takes the label under its centre, so a mirrored map enlarges to the mirrored enlargement
    (odd to even sizes: no centre falls on a cell border). Taken from the corner, the map moved half a pixel."""
    torch.manual_seed(0)
    labels = torch.randint(0, 19, (7, 11), dtype=torch.uint8)
    big = enlarge_labels(labels, (10, 16))
    assert big.shape == (10, 16) and big.dtype == torch.uint8
    for dims in ([0], [1]):
        assert torch.equal(enlarge_labels(labels.flip(dims), (10, 16)), big.flip(dims))
    assert torch.equal(enlarge_labels(torch.tensor([[0, 1, 2]], dtype=torch.uint8), (1, 5))[0],
                       torch.tensor([0, 0, 1, 2, 2], dtype=torch.uint8))


def test_a_thin_part_is_resized_in_log_space():
    """Two cells, background then a thin part: upsampled 100x, the part starts where the two classes' log
    scores cross (t = 0.676 of the way between the cells' centres), not where the scores do (t = 0.551)."""
    scores = torch.tensor([[[0.99, 0.1]], [[0.01, 0.9]]])  # (K=2, 1, 2): background, part
    labels = label_map(scores[None], size=(1, 200))[0, 0]
    t = (torch.arange(200) + 0.5) / 100 - 0.5  # each output pixel's position between the two centres
    log_s = scores[:, 0].log()
    crossing = (log_s[1, 0] - log_s[0, 0]) / ((log_s[0, 1] - log_s[0, 0]) - (log_s[1, 1] - log_s[1, 0]))
    assert 0.67 < crossing < 0.68
    assert torch.equal(labels, (t > crossing).to(torch.uint8))
    assert torch.equal(image_label_map(scores, (1, 200))[0], labels)
    linear = F.interpolate(scores[None], size=(1, 200), mode="bilinear", align_corners=False)[0].argmax(0)[0]
    assert torch.equal(linear, (t > 0.98 / 1.78).long())  # resizing the scores themselves: a wider part


def test_at_the_score_grid_the_label_map_is_the_plain_argmax():
    scores = face_like_scores(2)
    assert torch.equal(label_map(scores[None])[0], scores.argmax(0).to(torch.uint8))
    assert torch.equal(label_map(scores[None], size=(16, 16))[0], scores.argmax(0).to(torch.uint8))


def test_a_chosen_class_is_above_one_half_where_its_label_is():
    """Recolouring's probabilities: on the grid, the classes' probabilities; resized, each one's log-odds, so
    with two classes its > 0.5 region is exactly its label map's."""
    scores = face_like_scores(3)[None]
    torch.testing.assert_close(chosen_probabilities(scores, [1, 11], (16, 16)), class_probabilities(scores)[:, [1, 11]])
    torch.manual_seed(4)
    two = face_like_scores(4, classes=2)[None]
    part = chosen_probabilities(two, [1], (150, 97))[0, 0]
    assert torch.equal(part > 0.5, label_map(two, size=(150, 97))[0] == 1) and 0.1 < (part > 0.5).float().mean() < 0.9
    absent = torch.zeros(1, 2, 4, 4)
    absent[:, 0] = 1
    assert (chosen_probabilities(absent, [1], (9, 9)) == 0).all()
    assert (chosen_probabilities(absent, [0], (9, 9)) == 1).all()
