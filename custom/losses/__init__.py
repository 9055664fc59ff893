"""Discrepancy and auxiliary losses for domain adaptation, and the instance-segmentation loss."""

from .adversarial import DomainAdversarialLoss, GradientReversal, dann_schedule, grad_reverse
from .coral import CORALLoss, covariance
from .instance import ForegroundDistanceBorderLoss
from .mmd import MMDLoss
from .sampling import class_samples, feature_samples, labels_at

__all__ = [
    "CORALLoss",
    "DomainAdversarialLoss",
    "ForegroundDistanceBorderLoss",
    "GradientReversal",
    "MMDLoss",
    "class_samples",
    "covariance",
    "dann_schedule",
    "feature_samples",
    "grad_reverse",
    "labels_at",
]
