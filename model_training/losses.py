"""Training losses for the parser (training only: the exported model stays stock).

``fixed`` assignment (the default) gives query ``k`` the class ``k``: no Hungarian
matching, so the queries cannot collapse onto each other, which is what made
MaskFormer trained from scratch on a few hundred faces stall or collapse in
``eval()``. With ``hungarian`` the model's own MaskFormer loss is used. Both add a
per-pixel cross-entropy on the *post-processed* class probabilities, the very
quantity inference argmaxes (resized to the labels in log space, as the service's
label maps are), weighted per class to lift rare parts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from face_parser.postprocess import resized_log_scores, semantic_scores
from model_training.metrics import IGNORE_INDEX


def one_hot_targets(labels_bhw: torch.Tensor, num_classes: int, size: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W)`` ids -> ``(B, K, h, w)`` soft targets (area fractions), ignore pixels dropped."""
    valid = labels_bhw != IGNORE_INDEX
    onehot = F.one_hot(labels_bhw.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2).float()
    onehot = onehot * valid.unsqueeze(1)
    return F.adaptive_avg_pool2d(onehot, size) if onehot.shape[-2:] != size else onehot


def semantic_ce(class_logits, mask_logits, labels_bhw, class_weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy of the class probabilities at the label size (``class_probabilities``: resized in log space)."""
    log_scores = resized_log_scores(semantic_scores(class_logits, mask_logits), tuple(labels_bhw.shape[-2:]))
    return F.nll_loss(log_scores.log_softmax(dim=1), labels_bhw, weight=class_weights, ignore_index=IGNORE_INDEX)


def semantic_dice(class_logits, mask_logits, labels_bhw) -> torch.Tensor:
    """Soft Dice of the normalised class probabilities at the mask resolution, averaged over the
    classes present in the batch: pooled F1 is what the parser is judged by, and Dice is its
    differentiable form, so thin parts (eyes, brows, lips) weigh as much as skin."""
    scores = semantic_scores(class_logits, mask_logits)
    probs = scores / scores.sum(1, keepdim=True).clamp_min(1e-6)
    targets = one_hot_targets(labels_bhw, probs.shape[1], tuple(probs.shape[-2:]))
    valid = targets.sum(1, keepdim=True)
    inter = (probs * targets).sum((0, 2, 3))
    total = (probs * valid).sum((0, 2, 3)) + targets.sum((0, 2, 3))
    present = targets.sum((0, 2, 3)) > 0
    return (1 - (2 * inter + 1) / (total + 1))[present].mean()


LOVASZ_STRIDE = 2  # the Lovász term reads every 2nd label row and column: a quarter of the sort, same thin parts


def semantic_lovasz(class_logits, mask_logits, labels_bhw) -> torch.Tensor:
    """Lovász-softmax (Berman et al., CVPR 2018) of the class probabilities, over the batch's pixels, averaged
    over the classes present: a convex surrogate of each class's IoU (Jaccard), so that it, like Dice, weighs a
    thin part as much as the skin, but with a gradient that follows the IoU's own ranking of the errors. Written
    here because the libraries that carry it (segmentation-models-pytorch, pytorch-toolbelt) need torchvision,
    which has no build for the pinned CPU torch. At full label size its sort took 3.5 s of a 3.9 s CPU training step, so
    it runs on every ``LOVASZ_STRIDE``-th label (the log scores resized to that grid)."""
    labels = labels_bhw[:, ::LOVASZ_STRIDE, ::LOVASZ_STRIDE]
    log_scores = resized_log_scores(semantic_scores(class_logits, mask_logits), tuple(labels.shape[-2:]))
    probs_nc = log_scores.softmax(dim=1).permute(0, 2, 3, 1).flatten(0, 2)
    labels_n = labels.flatten()
    valid = labels_n != IGNORE_INDEX
    probs_nc, labels_n = probs_nc[valid], labels_n[valid]
    fg = F.one_hot(labels_n, probs_nc.shape[1]).to(probs_nc.dtype)
    present = fg.sum(0) > 0
    fg, probs_nc = fg[:, present], probs_nc[:, present]
    errors_sorted, order = (fg - probs_nc).abs().sort(dim=0, descending=True)
    fg_sorted = fg.gather(0, order)
    positives = fg_sorted.sum(0)
    jaccard = 1 - (positives - fg_sorted.cumsum(0)) / (positives + (1 - fg_sorted).cumsum(0))
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])  # the Lovász extension's weights
    return (errors_sorted * grad).sum(0).mean()


def dice_loss(mask_logits_nhw: torch.Tensor, targets_nhw: torch.Tensor) -> torch.Tensor:
    probs = mask_logits_nhw.sigmoid().flatten(1)
    targets = targets_nhw.flatten(1)
    return (1 - (2 * (probs * targets).sum(1) + 1) / (probs.sum(1) + targets.sum(1) + 1)).mean()


def fixed_assignment_loss(
    class_logits_bqc: torch.Tensor, mask_logits_bqhw: torch.Tensor, labels_bhw: torch.Tensor,
    class_weights: torch.Tensor | None = None, no_object_weight: float = 0.1,
    mask_weight: float = 1.0, dice_weight: float = 1.0, semantic_weight: float = 1.0,
    semantic_dice_weight: float = 0.0, semantic_lovasz_weight: float = 0.0,
) -> torch.Tensor:
    """Query ``k`` predicts class ``k`` (present) or "no object"; queries ``>= K`` always "no object"."""
    batch, queries, num_classes = class_logits_bqc.shape[0], class_logits_bqc.shape[1], class_logits_bqc.shape[2] - 1
    if queries < num_classes:
        raise ValueError(f"fixed assignment needs at least {num_classes} queries, the model has {queries}")
    targets = one_hot_targets(labels_bhw, num_classes, tuple(mask_logits_bqhw.shape[-2:]))
    present_bk = targets.flatten(2).sum(-1) > 0
    class_target = torch.full((batch, queries), num_classes, dtype=torch.long, device=labels_bhw.device)
    ids = torch.arange(num_classes, device=labels_bhw.device).expand(batch, -1)
    class_target[:, :num_classes] = torch.where(present_bk, ids, torch.full_like(ids, num_classes))
    empty_weight = torch.ones(num_classes + 1, device=labels_bhw.device)
    empty_weight[-1] = no_object_weight
    loss = F.cross_entropy(class_logits_bqc.transpose(1, 2), class_target, weight=empty_weight)
    masks = mask_logits_bqhw[:, :num_classes][present_bk]
    if masks.numel():
        tgt = targets[present_bk]
        loss = loss + mask_weight * F.binary_cross_entropy_with_logits(masks, tgt) + dice_weight * dice_loss(masks, tgt)
    loss = loss + semantic_weight * semantic_ce(class_logits_bqc, mask_logits_bqhw, labels_bhw, class_weights)
    if semantic_dice_weight:
        loss = loss + semantic_dice_weight * semantic_dice(class_logits_bqc, mask_logits_bqhw, labels_bhw)
    if semantic_lovasz_weight:
        loss = loss + semantic_lovasz_weight * semantic_lovasz(class_logits_bqc, mask_logits_bqhw, labels_bhw)
    return loss


def hungarian_targets(labels_bhw: torch.Tensor, num_classes: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Label maps -> MaskFormer's ``mask_labels`` / ``class_labels`` (one binary mask per present class)."""
    mask_labels, class_labels = [], []
    for labels_hw in labels_bhw:
        ids = [int(i) for i in labels_hw.unique() if int(i) < num_classes]
        class_labels.append(torch.tensor(ids, dtype=torch.long, device=labels_hw.device))
        mask_labels.append(torch.stack([(labels_hw == i).float() for i in ids]))
    return mask_labels, class_labels
