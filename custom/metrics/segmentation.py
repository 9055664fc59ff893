"""Binary segmentation metrics from confusion counts (so volumes aggregate exactly)."""

from __future__ import annotations

import numpy as np


def confusion_counts(pred: np.ndarray, label: np.ndarray) -> dict[str, int]:
    """True/false positive/negative voxel counts of two binary arrays of equal shape."""
    pred, label = np.asarray(pred).astype(bool), np.asarray(label).astype(bool)
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape {label.shape}.")
    tp = int(np.count_nonzero(pred & label))
    fp = int(np.count_nonzero(pred & ~label))
    fn = int(np.count_nonzero(~pred & label))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(pred.size - tp - fp - fn)}


def metrics_from_counts(tp: int, fp: int, fn: int, tn: int = 0) -> dict[str, float]:
    """IoU (Jaccard), Dice, precision and recall of the foreground; 1.0 where both sets are empty."""

    def ratio(num: float, den: float) -> float:
        return float(num / den) if den else 1.0

    return {
        "iou": ratio(tp, tp + fp + fn),
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }


def binary_metrics(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Foreground IoU, Dice, precision and recall of a binary prediction against a binary label."""
    return metrics_from_counts(**confusion_counts(pred, label))
