"""Turning encoder feature maps into sample matrices for distribution-matching losses."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _subsample(samples: torch.Tensor, max_samples: int | None) -> torch.Tensor:
    if max_samples is not None and samples.shape[0] > max_samples:
        samples = samples[torch.randperm(samples.shape[0], device=samples.device)[:max_samples]]
    return samples


def feature_samples(features: torch.Tensor, max_samples: int | None = 512) -> torch.Tensor:
    """(B, C, *spatial) feature maps -> (N, C): every location of every image is one C-dim sample.

    At most ``max_samples`` locations are drawn at random (without replacement), which keeps the
    kernel matrices of MMD small at full-resolution levels.
    """
    if features.ndim < 2:
        raise ValueError(f"expected (B, C, ...) features, got shape {tuple(features.shape)}.")
    return _subsample(features.movedim(1, -1).reshape(-1, features.shape[1]), max_samples)


def labels_at(labels: torch.Tensor, spatial_shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """(B, *spatial) integer class map resized to a feature level's ``spatial_shape`` (nearest)."""
    if tuple(labels.shape[1:]) == tuple(spatial_shape):
        return labels
    return F.interpolate(labels[:, None].float(), size=tuple(spatial_shape), mode="nearest")[:, 0].long()


def class_samples(
    features: torch.Tensor, labels: torch.Tensor, cls: int, max_samples: int | None = 512
) -> torch.Tensor:
    """(N, C) samples of the locations of ``features`` (B, C, *spatial) whose ``labels`` (B, *spatial,
    any resolution, -1 = ignore) equal ``cls``; at most ``max_samples`` drawn at random."""
    labels = labels_at(labels, features.shape[2:])
    return _subsample(features.movedim(1, -1)[labels == cls], max_samples)
