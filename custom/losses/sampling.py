"""Turning encoder feature maps into sample matrices for distribution-matching losses."""

from __future__ import annotations

import torch


def feature_samples(features: torch.Tensor, max_samples: int | None = 512) -> torch.Tensor:
    """(B, C, *spatial) feature maps -> (N, C): every location of every image is one C-dim sample.

    At most ``max_samples`` locations are drawn at random (without replacement), which keeps the
    kernel matrices of MMD small at full-resolution levels.
    """
    if features.ndim < 2:
        raise ValueError(f"expected (B, C, ...) features, got shape {tuple(features.shape)}.")
    samples = features.movedim(1, -1).reshape(-1, features.shape[1])
    if max_samples is not None and samples.shape[0] > max_samples:
        index = torch.randperm(samples.shape[0], device=samples.device)[:max_samples]
        samples = samples[index]
    return samples
