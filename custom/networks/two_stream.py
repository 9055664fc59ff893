"""Two-stream U-Net (Bermúdez-Chacón et al. 2018): related, not shared, source and target weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .unet import UNet


class TwoStreamUNet(nn.Module):
    """A source stream and a target stream whose weights are tied by a regulariser instead of shared.

    For each weight tensor l the regulariser is exp(||a_l w_s,l + b_l - w_t,l||² / n_l) - 1 with
    learnable scalars a_l, b_l (initialised to 1, 0), so each layer may drift by an affine change.
    ``target`` is the deployable network (a plain ``UNet``); ``source`` starts as its copy.
    """

    def __init__(self, target: UNet) -> None:
        super().__init__()
        self.target = target
        self.source = copy.deepcopy(target)
        names = [n for n, p in target.named_parameters() if p.ndim > 1]
        self.tied = names
        self.scale = nn.Parameter(torch.ones(len(names)))
        self.shift = nn.Parameter(torch.zeros(len(names)))

    def weight_regularizer(self) -> torch.Tensor:
        """Sum over tied weight tensors of exp(mean squared affine mismatch) - 1."""
        source = dict(self.source.named_parameters())
        target = dict(self.target.named_parameters())
        terms = [
            torch.exp(((self.scale[i] * source[n] + self.shift[i] - target[n]) ** 2).mean()) - 1
            for i, n in enumerate(self.tied)
        ]
        return torch.stack(terms).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)
