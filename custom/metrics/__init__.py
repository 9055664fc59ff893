"""Segmentation, instance and membrane (ISBI 2012) metrics, and label-free model-selection scores."""

from .boundaries import ISBIScores, cells_from_membrane_mask, isbi_scores, segment_from_boundaries
from .errors import error_breakdown, section_object_areas
from .instances import InstanceMetrics, instance_metrics, iou_matrix, match_counts, split_merge_counts
from .segmentation import binary_metrics, confusion_counts, metrics_from_counts
from .selection import (
    TargetEntropyHandler,
    augmentation_agreement,
    batch_nuclear_norm,
    bbse_foreground_fraction,
    confusion_rates,
    consensus_agreement,
    dev_risk,
    dice_agreement,
    domain_probability,
    importance_weights,
    information_maximization,
    iwcv_risk,
    mlls_foreground_fraction,
    prediction_entropy,
    soft_neighborhood_density,
    target_prediction_stats,
    tile_features_and_losses,
)

__all__ = [
    "InstanceMetrics",
    "augmentation_agreement",
    "batch_nuclear_norm",
    "bbse_foreground_fraction",
    "confusion_rates",
    "consensus_agreement",
    "dev_risk",
    "dice_agreement",
    "domain_probability",
    "importance_weights",
    "information_maximization",
    "iwcv_risk",
    "mlls_foreground_fraction",
    "prediction_entropy",
    "soft_neighborhood_density",
    "ISBIScores",
    "cells_from_membrane_mask",
    "TargetEntropyHandler",
    "binary_metrics",
    "confusion_counts",
    "error_breakdown",
    "instance_metrics",
    "isbi_scores",
    "iou_matrix",
    "match_counts",
    "metrics_from_counts",
    "section_object_areas",
    "segment_from_boundaries",
    "split_merge_counts",
    "target_prediction_stats",
    "tile_features_and_losses",
]
