"""CORAL: distance between source and target feature covariances (Sun & Saenko 2016)."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from .sampling import feature_samples


def covariance(samples: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance of (N, D) samples -> (D, D)."""
    centred = samples - samples.mean(0, keepdim=True)
    return centred.T @ centred / max(1, samples.shape[0] - 1)


class CORALLoss(_Loss):
    """||C_s - C_t||_F² / (4 d²) for (N, d) samples or (B, C, ...) feature maps (locations = samples)."""

    def __init__(self, max_samples: int | None = 2048, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.max_samples = max_samples

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        xs = source if source.ndim == 2 else feature_samples(source, self.max_samples)
        xt = target if target.ndim == 2 else feature_samples(target, self.max_samples)
        d = xs.shape[1]
        diff = covariance(xs.float()) - covariance(xt.float())
        return (diff**2).sum() / (4 * d * d)
