"""The training losses reward the right answer and point the gradient at it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from face_parser.labels import CELEBAMASK_HQ_SCHEME
from face_parser.modeling import build_model
from face_parser.postprocess import class_probabilities, semantic_scores
from model_training.losses import (
    LOVASZ_STRIDE,
    fixed_assignment_loss,
    hungarian_loss,
    hungarian_targets,
    one_hot_targets,
    semantic_ce,
    semantic_dice,
    semantic_lovasz,
)


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
    classes in the labels, of 1 - IoU, read on every ``LOVASZ_STRIDE``-th label and at the very same pixels of the
    prediction (masks at the labels' size, edges on odd pixels: a 2x2 block's centre would straddle them)."""
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 5:11, 3:13] = 1
    labels[1, 11:15, 3:7] = 2
    predicted = torch.roll(labels, 1, dims=2)
    predicted[0, 0, 0] = 3  # a class absent from the labels: it costs the others, it is not averaged itself
    loss = semantic_lovasz(*logits_for(predicted, 4, 30.0), labels)
    grid = labels[:, ::LOVASZ_STRIDE, ::LOVASZ_STRIDE]
    read = predicted[:, ::LOVASZ_STRIDE, ::LOVASZ_STRIDE]
    ious = [((read == c) & (grid == c)).sum() / ((read == c) | (grid == c)).sum() for c in (0, 1, 2)]
    expected = torch.stack([1 - iou.float() for iou in ious]).mean()
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=0)
    assert semantic_lovasz(*logits_for(labels, 4, 30.0), labels) < 1e-4


def test_semantic_lovasz_reads_the_scores_at_the_labels_it_reads():
    """On a smooth score map at the labels' size, the loss sees only the scores and labels at the strided pixels:
    it is the same with every other pixel a copy of its block's strided one."""
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 16, 16))
    class_logits = torch.randn(2, 3, 4)
    mask_logits = F.interpolate(torch.randn(2, 3, 4, 4) * 3, size=(16, 16), mode="bicubic", align_corners=False)

    def blocks_of_the_strided_pixels(maps: torch.Tensor) -> torch.Tensor:
        strided = maps[..., ::LOVASZ_STRIDE, ::LOVASZ_STRIDE]
        return strided.repeat_interleave(LOVASZ_STRIDE, -1).repeat_interleave(LOVASZ_STRIDE, -2)

    torch.testing.assert_close(semantic_lovasz(class_logits, mask_logits, labels), semantic_lovasz(
        class_logits, blocks_of_the_strided_pixels(mask_logits), blocks_of_the_strided_pixels(labels)))


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


def left_half_ignored(labels_bhw: torch.Tensor) -> torch.Tensor:
    ignored = labels_bhw.clone()
    ignored[..., : labels_bhw.shape[-1] // 2] = 255
    return ignored


def test_mask_losses_without_ignore_pixels_are_the_plain_bce_and_dice():
    """The ignore-aware per-query BCE and Dice give, on fully known labels, what the unweighted formulas gave."""
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 32, 32))
    labels[1, :, :] = 1  # classes 0 and 2 absent from the second image: their queries get no mask loss
    class_logits, mask_logits = torch.randn(2, 4, 4), torch.randn(2, 4, 8, 8)
    masks_only = fixed_assignment_loss(class_logits, mask_logits, labels, semantic_weight=0.0) - fixed_assignment_loss(
        class_logits, mask_logits, labels, semantic_weight=0.0, mask_weight=0.0, dice_weight=0.0)
    targets = one_hot_targets(labels, 3, (8, 8))
    present = targets.flatten(2).sum(-1) > 0
    masks, tgt = mask_logits[:, :3][present], targets[present]
    probs = masks.sigmoid().flatten(1)
    dice = (1 - (2 * (probs * tgt.flatten(1)).sum(1) + 1) / (probs.sum(1) + tgt.flatten(1).sum(1) + 1)).mean()
    torch.testing.assert_close(masks_only, F.binary_cross_entropy_with_logits(masks, tgt) + dice)


def test_fixed_assignment_loss_learns_nothing_from_ignore_pixels():
    """Ignored label pixels teach no query "no class here": no gradient on the mask cells well inside an ignored
    half, and the mask losses are those of the known half alone."""
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (1, 64, 64))
    ignored = left_half_ignored(labels)
    class_logits = torch.randn(1, 3, 4)
    mask_logits = torch.randn(1, 3, 16, 16, requires_grad=True)
    fixed_assignment_loss(class_logits, mask_logits, ignored, semantic_dice_weight=1.0,
                          semantic_lovasz_weight=1.0).backward()
    assert mask_logits.grad[..., :6].abs().sum() == 0
    assert mask_logits.grad[..., 8:].abs().sum() > 0
    known_half = fixed_assignment_loss(class_logits, mask_logits[..., 8:], labels[..., 32:], semantic_weight=0.0)
    torch.testing.assert_close(fixed_assignment_loss(class_logits, mask_logits, ignored, semantic_weight=0.0),
                               known_half)


def test_a_cell_target_is_the_share_of_its_known_pixels():
    """Cells half ignored, their known half one class: targets of that class alone (the BCE; Dice's +1 smoothing
    does not scale with the pixels' weights)."""
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[:, :2, :2] = 1
    half_known = labels.clone()
    half_known[:, :, ::2] = 255
    class_logits, mask_logits = torch.randn(1, 2, 3), torch.randn(1, 2, 2, 2)
    torch.testing.assert_close(
        fixed_assignment_loss(class_logits, mask_logits, half_known, semantic_weight=0.0, dice_weight=0.0),
        fixed_assignment_loss(class_logits, mask_logits, labels[:, ::2, ::2], semantic_weight=0.0, dice_weight=0.0))


@pytest.mark.parametrize("preset", ["tiny", "tiny-m2f"])
def test_hungarian_loss_without_ignore_pixels_is_the_stock_loss(preset):
    torch.manual_seed(0)
    model = build_model(preset, CELEBAMASK_HQ_SCHEME).eval()
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64))
    mask_labels, class_labels = hungarian_targets(labels, model.config.num_labels)
    torch.manual_seed(1)  # Mask2Former's loss samples points at random
    stock = model(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels).loss
    torch.manual_seed(1)
    outputs = model(pixel_values=pixel_values, output_auxiliary_logits=True)
    torch.testing.assert_close(hungarian_loss(model, outputs, labels), stock)
    with pytest.raises(ValueError, match="output_auxiliary_logits=True"):
        hungarian_loss(model, model(pixel_values=pixel_values), labels)


def test_hungarian_loss_learns_nothing_from_ignore_pixels():
    torch.manual_seed(0)
    model = build_model("tiny", CELEBAMASK_HQ_SCHEME)
    labels = left_half_ignored(torch.randint(0, 19, (1, 64, 64)))
    mask_logits = torch.randn(1, model.config.num_queries, 16, 16, requires_grad=True)
    outputs = SimpleNamespace(class_queries_logits=torch.randn(1, model.config.num_queries, 20),
                              masks_queries_logits=mask_logits, auxiliary_logits=[])
    hungarian_loss(model, outputs, labels).backward()
    assert mask_logits.grad[..., :8].abs().sum() == 0
    assert mask_logits.grad[..., 8:].abs().sum() > 0
