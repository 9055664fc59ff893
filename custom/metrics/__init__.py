"""Segmentation and instance metrics, and label-free model-selection scores."""

from .instances import instance_metrics, iou_matrix, match_counts, split_merge_counts
from .segmentation import binary_metrics, confusion_counts, metrics_from_counts
from .selection import TargetEntropyHandler, mean_prediction_entropy, spearman

__all__ = [
    "TargetEntropyHandler",
    "binary_metrics",
    "confusion_counts",
    "instance_metrics",
    "iou_matrix",
    "match_counts",
    "mean_prediction_entropy",
    "metrics_from_counts",
    "spearman",
    "split_merge_counts",
]
