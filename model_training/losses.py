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


def known_fractions(labels_bhw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W)`` ids -> ``(B, 1, h, w)`` the share of each cell's label pixels that are not ignored, pooled as
    :func:`one_hot_targets` pools its targets (exactly 1 where no pixel is ignored)."""
    known = (labels_bhw != IGNORE_INDEX).unsqueeze(1).float()
    return F.adaptive_avg_pool2d(known, size) if known.shape[-2:] != size else known


def label_size_log_scores(class_logits, mask_logits, labels_bhw) -> torch.Tensor:
    """``(B, K, H, W)`` log class scores at the labels' size, resized in log space as label maps are."""
    return resized_log_scores(semantic_scores(class_logits, mask_logits), tuple(labels_bhw.shape[-2:]))


def semantic_ce(class_logits, mask_logits, labels_bhw, class_weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy of the class probabilities at the label size (``class_probabilities``: resized in log space)."""
    return cross_entropy_of(label_size_log_scores(class_logits, mask_logits, labels_bhw), labels_bhw, class_weights)


def cross_entropy_of(log_scores_bkhw, labels_bhw, class_weights: torch.Tensor | None) -> torch.Tensor:
    """:func:`semantic_ce` of log scores already at the labels' size."""
    return F.nll_loss(log_scores_bkhw.log_softmax(dim=1), labels_bhw, weight=class_weights, ignore_index=IGNORE_INDEX)


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
    it runs on every ``LOVASZ_STRIDE``-th label pixel."""
    return lovasz_of(label_size_log_scores(class_logits, mask_logits, labels_bhw), labels_bhw)


def lovasz_of(log_scores_bkhw: torch.Tensor, labels_bhw: torch.Tensor) -> torch.Tensor:
    """:func:`semantic_lovasz` of log scores at the labels' size. Both are read at the same pixels: scores resized
    straight to the strided grid would sit at the centres of its blocks, half a label pixel from the labels read."""
    labels = labels_bhw[:, ::LOVASZ_STRIDE, ::LOVASZ_STRIDE]
    log_scores = log_scores_bkhw[..., ::LOVASZ_STRIDE, ::LOVASZ_STRIDE]
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


def dice_loss(mask_logits_nhw: torch.Tensor, targets_nhw: torch.Tensor, known_nhw: torch.Tensor) -> torch.Tensor:
    """Soft Dice of each mask, ``known_nhw`` (in [0, 1]) weighing its pixels: ignored ones count for neither side."""
    probs = (mask_logits_nhw.sigmoid() * known_nhw).flatten(1)
    targets = (targets_nhw * known_nhw).flatten(1)
    return (1 - (2 * (probs * targets).sum(1) + 1) / (probs.sum(1) + targets.sum(1) + 1)).mean()


def mask_losses(mask_logits_nhw, targets_nhw, known_nhw) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query binary cross-entropy and Dice of masks against soft targets (each pixel's share of the class
    among its known label pixels), pixels weighted by how much of them is known: ignore pixels teach no query
    "no class here", where the truth is unknown."""
    bce = F.binary_cross_entropy_with_logits(mask_logits_nhw, targets_nhw, reduction="none")
    return (bce * known_nhw).sum() / known_nhw.sum(), dice_loss(mask_logits_nhw, targets_nhw, known_nhw)


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
    known = known_fractions(labels_bhw, tuple(targets.shape[-2:])).expand_as(targets)
    present_bk = targets.flatten(2).sum(-1) > 0
    class_target = torch.full((batch, queries), num_classes, dtype=torch.long, device=labels_bhw.device)
    ids = torch.arange(num_classes, device=labels_bhw.device).expand(batch, -1)
    class_target[:, :num_classes] = torch.where(present_bk, ids, torch.full_like(ids, num_classes))
    empty_weight = torch.ones(num_classes + 1, device=labels_bhw.device)
    empty_weight[-1] = no_object_weight
    loss = F.cross_entropy(class_logits_bqc.transpose(1, 2), class_target, weight=empty_weight)
    masks = mask_logits_bqhw[:, :num_classes][present_bk]
    if masks.numel():  # a present class has a known pixel, so each of these masks has some weight
        known_n = known[present_bk]
        bce, dice = mask_losses(masks, targets[present_bk] / known_n.clamp_min(1e-6), known_n)
        loss = loss + mask_weight * bce + dice_weight * dice
    log_scores = label_size_log_scores(class_logits_bqc, mask_logits_bqhw, labels_bhw)  # shared by CE and Lovász
    loss = loss + semantic_weight * cross_entropy_of(log_scores, labels_bhw, class_weights)
    if semantic_dice_weight:
        loss = loss + semantic_dice_weight * semantic_dice(class_logits_bqc, mask_logits_bqhw, labels_bhw)
    if semantic_lovasz_weight:
        loss = loss + semantic_lovasz_weight * lovasz_of(log_scores, labels_bhw)
    return loss


def hungarian_targets(labels_bhw: torch.Tensor, num_classes: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Label maps -> MaskFormer's ``mask_labels`` / ``class_labels`` (one binary mask per present class). Ignore
    pixels are 0 in every mask: the stock loss reads them as "no class", unless :func:`hungarian_loss` silences them."""
    mask_labels, class_labels = [], []
    for labels_hw in labels_bhw:
        ids = [int(i) for i in labels_hw.unique() if int(i) < num_classes]
        class_labels.append(torch.tensor(ids, dtype=torch.long, device=labels_hw.device))
        mask_labels.append(torch.stack([(labels_hw == i).float() for i in ids]))
    return mask_labels, class_labels


SILENT_MASK_LOGIT = -30.0  # sigmoid 1e-13: a mask's "not here", which the stock loss scores ~0 against a 0 target


def hungarian_loss(model, outputs, labels_bhw: torch.Tensor) -> torch.Tensor:
    """The model's own MaskFormer / Mask2Former loss (Hungarian matching) of ``outputs``, a forward pass run with
    ``output_auxiliary_logits=True`` and no labels, with ignore pixels left out. The stock loss takes no ignore mask
    and would score them as "no class" for every query, so the mask logits of the cells whose label pixels are all
    ignored become a constant "not here" (:data:`SILENT_MASK_LOGIT`): no gradient, next to no loss, no sway on the
    matching. Without ignore pixels it is the stock loss, unchanged."""
    if outputs.auxiliary_logits is None:
        raise ValueError("hungarian_loss needs the decoder layers' predictions: run the model with "
                         "output_auxiliary_logits=True (the stock loss supervises them too)")
    mask_labels, class_labels = hungarian_targets(labels_bhw, model.config.num_labels)
    known = known_fractions(labels_bhw, tuple(outputs.masks_queries_logits.shape[-2:])) > 0

    def silenced(mask_logits_bqhw: torch.Tensor) -> torch.Tensor:
        return torch.where(known, mask_logits_bqhw, torch.full_like(mask_logits_bqhw, SILENT_MASK_LOGIT))

    auxiliary = [{"masks_queries_logits": silenced(a["masks_queries_logits"]),
                  "class_queries_logits": a["class_queries_logits"]} for a in outputs.auxiliary_logits]
    losses = model.get_loss_dict(silenced(outputs.masks_queries_logits), outputs.class_queries_logits,
                                 mask_labels, class_labels, auxiliary)
    return model.get_loss(losses)
