"""Discrepancy and auxiliary losses for domain adaptation, and the instance-segmentation loss."""

from .adversarial import DomainAdversarialLoss, GradientReversal, dann_schedule, grad_reverse
from .coral import CORALLoss, covariance
from .instance import ForegroundDistanceBorderLoss
from .mmd import MMDLoss
from .sampling import feature_samples

__all__ = [
    "CORALLoss",
    "DomainAdversarialLoss",
    "ForegroundDistanceBorderLoss",
    "GradientReversal",
    "MMDLoss",
    "covariance",
    "dann_schedule",
    "feature_samples",
    "grad_reverse",
]
