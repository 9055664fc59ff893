"""Maximum mean discrepancy with a mixture of Gaussian (RBF) kernels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.modules.loss import _Loss

from .sampling import feature_samples


class MMDLoss(_Loss):
    """Biased estimate of squared MMD between source and target samples, multi-kernel RBF.

    k(x, y) = Σ_k exp(-||x - y||² / (2 σ_k²)). With ``bandwidths`` the σ_k are absolute; otherwise
    σ_k² = m_k · mean pairwise squared distance of the pooled samples (detached), with
    ``bandwidth_multipliers`` m_k, the usual data-driven choice (Long et al. 2015; Roels et al. 2019).
    Inputs are (N, D) samples or (B, C, ...) feature maps (every location a sample, see
    ``feature_samples``). The biased estimator is ≥ 0 and 0 for identical sample sets.
    """

    def __init__(
        self,
        bandwidth_multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        bandwidths: Sequence[float] | None = None,
        max_samples: int | None = 512,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=reduction)
        self.bandwidth_multipliers = tuple(bandwidth_multipliers)
        self.bandwidths = tuple(bandwidths) if bandwidths is not None else None
        self.max_samples = max_samples

    def _samples(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.ndim == 2 else feature_samples(x, self.max_samples)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        xs, xt = self._samples(source).float(), self._samples(target).float()
        pooled = torch.cat([xs, xt])
        sq_dist = torch.cdist(pooled, pooled).pow(2)
        if self.bandwidths is not None:
            sigmas2 = [b**2 for b in self.bandwidths]
        else:
            base = sq_dist.detach().sum() / max(1, pooled.shape[0] ** 2 - pooled.shape[0])
            base = torch.clamp(base, min=1e-8)
            sigmas2 = [base * m for m in self.bandwidth_multipliers]
        kernel = sum(torch.exp(-sq_dist / (2 * s2)) for s2 in sigmas2)
        n = xs.shape[0]
        mmd2 = kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()
        return torch.clamp(mmd2, min=0.0)
