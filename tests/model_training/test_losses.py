"""The training losses reward the right answer and point the gradient at it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from face_parser.postprocess import class_probabilities, semantic_scores
from model_training.losses import fixed_assignment_loss, semantic_ce, semantic_dice


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


def test_semantic_dice_gradient_lowers_the_loss():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, 2:5, 2:5] = 1
    class_logits, mask_logits = logits_for(labels, 2, 0.1)
    mask_logits = torch.randn_like(mask_logits, requires_grad=True)
    before = fixed_assignment_loss(class_logits, mask_logits, labels, semantic_dice_weight=1.0)
    before.backward()
    with torch.no_grad():
        after = fixed_assignment_loss(class_logits, mask_logits - 5 * mask_logits.grad, labels,
                                      semantic_dice_weight=1.0)
    assert after < before


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
