"""Segmentation metrics and label-free model-selection scores."""

from .segmentation import binary_metrics, confusion_counts, metrics_from_counts
from .selection import TargetEntropyHandler, mean_prediction_entropy, spearman

__all__ = ["TargetEntropyHandler", "binary_metrics", "confusion_counts", "mean_prediction_entropy", "metrics_from_counts", "spearman"]
