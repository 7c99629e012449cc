"""Per-class F1 and IoU summed over a whole set (the CelebAMask-HQ protocol).

TP/FP/FN are counted per class over all pixels of all images (not averaged per
image), from one confusion matrix.
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
        per_class = {
            name: {"f1": _num(f1[i]), "iou": _num(iou[i]), "pixels": int(support[i]),
                   "predicted_pixels": int(self.matrix[:, i].sum())}
            for i, name in enumerate(names)
        }
        return {
            "mean_f1_foreground": _num(np.nanmean(np.where(fg, f1, np.nan))) if fg.any() else None,
            "mean_iou": _num(np.nanmean(np.where(present, iou, np.nan))) if present.any() else None,
            "pixel_accuracy": _num(tp.sum() / max(self.matrix.sum(), 1)),
            "classes_never_predicted": [n for i, n in enumerate(names) if present[i] and tp[i] == 0],
            "per_class": per_class,
        }


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 4)
