"""How well a parser labels faces: pooled per-class F1 / IoU and the per-image F.

- Pooled (the CelebAMask-HQ protocol): TP/FP/FN counted per class over all
  pixels of all images, from one confusion matrix. ``mean_f1_foreground``
  averages the 18 face classes, ``mean_f1_all`` the 19 with background.
- Per-image F (the NTU CE7454 face-parsing challenge metric): for each image,
  the F1 of every class present in its ground truth (background included),
  averaged; then averaged over images. A missed earring in one photo costs that
  photo a lot, where the pooled figure barely moves.
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
    tp = np.diag(cm.matrix).astype(np.float64)
    support, predicted = cm.matrix.sum(1), cm.matrix.sum(0)
    present = support > 0
    return float(np.mean(2 * tp[present] / (support[present] + predicted[present]))) if present.any() else float("nan")


class PerImageF:
    """Accumulates :func:`image_f1` over images; ``value`` is their mean."""

    def __init__(self, num_classes: int):
        self.num_classes, self.values = num_classes, []

    def update(self, target_hw: np.ndarray, pred_hw: np.ndarray) -> None:
        score = image_f1(target_hw, pred_hw, self.num_classes)
        if not np.isnan(score):
            self.values.append(score)

    @property
    def value(self) -> float | None:
        return round(float(np.mean(self.values)), 4) if self.values else None
