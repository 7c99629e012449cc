"""How well a parser labels faces: pooled per-class F1 / IoU and the per-image F.

- Pooled (the CelebAMask-HQ protocol): TP/FP/FN counted per class over all
  pixels of all images, from one confusion matrix. ``mean_f1_foreground``
  averages the 18 face classes, ``mean_f1_all`` the 19 with background.
- Per-image F (the NTU CE7454 face-parsing challenge metric): for each image,
  the F1 of every class present in its ground truth (background included),
  averaged; then averaged over images. A missed earring in one photo costs that
  photo a lot, where the pooled figure barely moves.

Both are measured on a hundred photos, so both would move on another hundred:
:func:`bootstrap_intervals` says how far (the photos resampled with replacement), and
:func:`paired_differences` whether one model beats another on the same photos by more than that.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Accumulates a ``(K, K)`` matrix of (ground truth, prediction) pixel counts."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, target_hw: np.ndarray, pred_hw: np.ndarray) -> None:
        """Add one image (or a batch: any matching shapes) of integer class ids."""
        if target_hw.shape != pred_hw.shape:
            raise ValueError(f"target {target_hw.shape} and prediction {pred_hw.shape} differ in shape")
        t = target_hw.reshape(-1).astype(np.int64)
        p = pred_hw.reshape(-1).astype(np.int64)
        keep = t != IGNORE_INDEX
        k = self.num_classes
        self.matrix += np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k)

    def normalised(self) -> np.ndarray:
        """Rows divided by their totals: ``[t, p]`` is the share of class ``t`` pixels labelled ``p``."""
        return self.matrix / np.maximum(self.matrix.sum(1, keepdims=True), 1)

    def scores(self, names: list[str] | tuple[str, ...]) -> dict:
        """Per-class F1/IoU/support plus mean foreground F1 (over classes present) and mean IoU."""
        tp = np.diag(self.matrix).astype(np.float64)
        fp = self.matrix.sum(0) - tp
        fn = self.matrix.sum(1) - tp
        support = self.matrix.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
            iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        present = support > 0
        fg = present.copy()
        fg[0] = False  # background is not a face part
        all_f1 = np.where(present, f1, np.nan)
        per_class = {
            name: {"f1": _num(f1[i]), "iou": _num(iou[i]), "pixels": int(support[i]),
                   "predicted_pixels": int(self.matrix[:, i].sum())}
            for i, name in enumerate(names)
        }
        return {
            "mean_f1_foreground": _num(np.nanmean(np.where(fg, f1, np.nan))) if fg.any() else None,
            "mean_f1_all": _num(np.nanmean(all_f1)) if present.any() else None,
            "mean_iou": _num(np.nanmean(np.where(present, iou, np.nan))) if present.any() else None,
            "pixel_accuracy": _num(tp.sum() / max(self.matrix.sum(), 1)),
            "classes_never_predicted": [n for i, n in enumerate(names) if present[i] and tp[i] == 0],
            "per_class": per_class,
        }


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 4)


def image_f1(target_hw: np.ndarray, pred_hw: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes present in one image's ground truth (ignore pixels skipped)."""
    cm = ConfusionMatrix(num_classes)
    cm.update(target_hw, pred_hw)
    return float(present_f1(cm.matrix[None])[0])


def present_f1(matrices_nkk: np.ndarray) -> np.ndarray:
    """``(N,)`` mean F1 over the classes present in each ``(K, K)`` matrix's ground truth (NaN: none present)."""
    tp = np.diagonal(matrices_nkk, axis1=1, axis2=2).astype(np.float64)
    support, predicted = matrices_nkk.sum(2), matrices_nkk.sum(1)
    present = support > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        f1_sum = np.where(present, 2 * tp / (support + predicted), 0.0).sum(1)
        return np.where(present.any(1), f1_sum / present.sum(1), np.nan)


SUMMARY = ("per_image_f", "mean_f1_foreground", "mean_f1_all")


def summary_figures(matrices_nkk: np.ndarray, weights_rn: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`SUMMARY` for ``R`` weightings of the same images (how often each is drawn): ``(R,)`` each."""
    per_image = present_f1(matrices_nkk)
    valid = ~np.isnan(per_image)
    per_image_f = (weights_rn[:, valid] * per_image[valid]).sum(1) / np.maximum(weights_rn[:, valid].sum(1), 1)
    k = matrices_nkk.shape[1]
    pooled = (weights_rn @ matrices_nkk.reshape(len(matrices_nkk), -1).astype(np.float64)).reshape(-1, k, k)
    tp = np.diagonal(pooled, axis1=1, axis2=2)
    support, predicted = pooled.sum(2), pooled.sum(1)
    present = support > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(present, 2 * tp / (support + predicted), np.nan)
        foreground = np.nanmean(np.where(present[:, 1:], f1[:, 1:], np.nan), axis=1)
        every = np.nanmean(f1, axis=1)
    return {"per_image_f": per_image_f, "mean_f1_foreground": foreground, "mean_f1_all": every}


def resamples(images: int, rounds: int, seed: int) -> np.ndarray:
    """``(rounds, images)``: how many times each image is drawn in each bootstrap resample."""
    draws = np.random.default_rng(seed).integers(0, images, size=(rounds, images))
    return np.stack([np.bincount(row, minlength=images) for row in draws]).astype(np.float64)


def percentile_interval(values: np.ndarray, level: float) -> list[float]:
    """``[low, high]``: the central ``level`` of ``values`` (NaN ignored), rounded as the reports are."""
    tail = 100 * (1 - level) / 2
    return [round(float(np.nanpercentile(values, q)), 4) for q in (tail, 100 - tail)]


def bootstrap_intervals(matrices_nkk: np.ndarray, rounds: int = 2000, seed: int = 0,
                        level: float = 0.95) -> dict[str, list[float]]:
    """Percentile interval of each :data:`SUMMARY` figure over ``rounds`` resamples of the images."""
    figures = summary_figures(matrices_nkk, resamples(len(matrices_nkk), rounds, seed))
    return {name: percentile_interval(v, level) for name, v in figures.items()}


def paired_differences(new_nkk: np.ndarray, old_nkk: np.ndarray, rounds: int = 2000, seed: int = 0,
                       level: float = 0.95) -> dict[str, dict[str, float]]:
    """``new - old`` for each :data:`SUMMARY` figure on the same images, with its percentile interval over
    resamples that draw the same images for both: the photos' difficulty cancels, so a gain much smaller
    than either figure's own interval can still be told from noise."""
    if new_nkk.shape != old_nkk.shape:
        raise ValueError(f"the two evaluations differ in shape ({new_nkk.shape} vs {old_nkk.shape}): "
                         "compare them on the same images and labels")
    if not np.array_equal(new_nkk.sum(axis=2), old_nkk.sum(axis=2)):  # each photo's ground-truth counts
        raise ValueError("the two evaluations' ground truths differ (other photos, another split, or "
                         "--fix_lr_convention on one side only): compare them on the same images and labels")
    weights = np.vstack([np.ones(len(new_nkk)), resamples(len(new_nkk), rounds, seed)])
    new, old = summary_figures(new_nkk, weights), summary_figures(old_nkk, weights)
    out = {}
    for name in SUMMARY:
        diff = new[name] - old[name]
        low, high = percentile_interval(diff[1:], level)
        out[name] = {"difference": round(float(diff[0]), 4), "low": low, "high": high}
    return out


class PerImageF:
    """Accumulates :func:`image_f1` over images; ``value`` is their mean."""

    def __init__(self, num_classes: int):
        self.num_classes, self.values = num_classes, []

    def update(self, target_hw: np.ndarray, pred_hw: np.ndarray) -> None:
        self.add(image_f1(target_hw, pred_hw, self.num_classes))

    def update_matrix(self, matrix_kk: np.ndarray) -> None:
        """One image given by its confusion matrix (already counted for the pooled figures)."""
        self.add(float(present_f1(matrix_kk[None])[0]))

    def add(self, score: float) -> None:
        if not np.isnan(score):
            self.values.append(score)

    @property
    def value(self) -> float | None:
        return round(float(np.mean(self.values)), 4) if self.values else None
