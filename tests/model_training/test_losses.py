"""The training losses reward the right answer and point the gradient at it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from face_parser.postprocess import class_probabilities, semantic_scores
from model_training.losses import LOVASZ_STRIDE, fixed_assignment_loss, semantic_ce, semantic_dice, semantic_lovasz


def logits_for(labels_bhw: torch.Tensor, num_classes: int, confident: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Query k says class k with mask logits +/- ``confident`` where the label is (not) k."""
    b = labels_bhw.shape[0]
    class_logits = torch.full((b, num_classes, num_classes + 1), -confident)
    class_logits[:, range(num_classes), range(num_classes)] = confident
    onehot = torch.nn.functional.one_hot(labels_bhw, num_classes).permute(0, 3, 1, 2).float()
    return class_logits, (onehot * 2 - 1) * confident


def test_semantic_dice_is_low_for_the_right_answer_and_high_for_a_wrong_one():
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, 2:4, 2:6] = 1
    labels[:, 5:7, 1:3] = 2
    right = semantic_dice(*logits_for(labels, 3, 8.0), labels)
    wrong = semantic_dice(*logits_for(torch.roll(labels, 3, dims=2), 3, 8.0), labels)
    assert right < 0.05
    assert wrong > 0.5


def assert_a_step_down_its_gradient_lowers_the_loss(labels, class_logits, mask_logits, **weights) -> None:
    mask_logits = mask_logits.clone().requires_grad_(True)
    before = fixed_assignment_loss(class_logits, mask_logits, labels, **weights)
    before.backward()
    with torch.no_grad():
        after = fixed_assignment_loss(class_logits, mask_logits - 5 * mask_logits.grad, labels, **weights)
    assert after < before


def test_semantic_dice_gradient_lowers_the_loss():
    torch.manual_seed(0)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, 2:5, 2:5] = 1
    class_logits, mask_logits = logits_for(labels, 2, 0.1)
    assert_a_step_down_its_gradient_lowers_the_loss(labels, class_logits, torch.randn_like(mask_logits),
                                                    semantic_dice_weight=1.0)


def test_semantic_ce_is_the_cross_entropy_of_what_inference_argmaxes():
    """Masks at half the labels' size: the loss scores the probabilities resized as label maps are (log space)."""
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 4:8, 4:12] = 1
    labels[:, 10:14, 2:6] = 2
    class_logits, mask_logits = logits_for(labels[:, ::2, ::2], 3, 3.0)
    mask_logits = mask_logits + torch.randn_like(mask_logits)
    probs = class_probabilities(semantic_scores(class_logits, mask_logits), size=(16, 16))
    expected = F.nll_loss(probs.log(), labels)
    torch.testing.assert_close(semantic_ce(class_logits, mask_logits, labels, None), expected)
    wrong = semantic_ce(*logits_for(torch.roll(labels, 5, dims=2)[:, ::2, ::2], 3, 3.0), labels, None)
    assert semantic_ce(*logits_for(labels[:, ::2, ::2], 3, 3.0), labels, None) < 0.5 < wrong


def test_semantic_lovasz_of_a_hard_answer_is_one_minus_its_iou():
    """The Lovász extension is exact on 0/1 errors: for confident probabilities the loss is the mean, over the
    classes in the labels, of 1 - IoU, read on every ``LOVASZ_STRIDE``-th label."""
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 4:10, 4:12] = 1
    labels[1, 10:14, 2:6] = 2
    grid = labels[:, ::LOVASZ_STRIDE, ::LOVASZ_STRIDE]
    predicted = torch.roll(grid, 1, dims=2)
    predicted[0, 0, 0] = 3  # a class absent from the labels: it costs the others, it is not averaged itself
    loss = semantic_lovasz(*logits_for(predicted, 4, 30.0), labels)
    ious = [((predicted == c) & (grid == c)).sum() / ((predicted == c) | (grid == c)).sum() for c in (0, 1, 2)]
    expected = torch.stack([1 - iou.float() for iou in ious]).mean()
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=0)
    assert semantic_lovasz(*logits_for(grid, 4, 30.0), labels) < 1e-4


def test_semantic_lovasz_gradient_lowers_the_loss_and_skips_ignored_pixels():
    torch.manual_seed(0)
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, 4:10, 4:10] = 1
    class_logits, _ = logits_for(labels[:, ::2, ::2], 2, 0.1)
    mask_logits = torch.randn(1, 2, 8, 8)
    assert_a_step_down_its_gradient_lowers_the_loss(labels, class_logits, mask_logits, semantic_lovasz_weight=1.0)
    ignored = labels.clone()
    ignored[:, :, 8:] = 255
    left_only = semantic_lovasz(class_logits, mask_logits[..., :4], labels[..., :8])
    torch.testing.assert_close(semantic_lovasz(class_logits, mask_logits, ignored), left_only)
