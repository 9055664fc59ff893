"""Segmentation metrics."""

from .segmentation import binary_metrics, confusion_counts, metrics_from_counts

__all__ = ["binary_metrics", "confusion_counts", "metrics_from_counts"]
