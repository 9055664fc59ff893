"""Two-stream U-Net (Bermúdez-Chacón et al. 2018): related, not shared, source and target weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .unet import UNet


class TwoStreamUNet(nn.Module):
    """A source stream and a target stream whose weights are tied by a regulariser instead of shared.

    For each parameter tensor l (weights, biases and normalisation affines alike) the regulariser is
    exp(||a_l w_s,l + b_l - w_t,l||² / (||w_s,l||² + n_l ε²)) - 1 with learnable scalars a_l, b_l
    (initialised to 1, 0), so each layer may drift by an affine change. The mismatch is relative to
    the source tensor's norm (ε = 0.01 keeps zero-initialised biases finite), so the pull on the
    target stream neither vanishes for large tensors nor depends on the layer's weight scale.
    ``target`` is the deployable network (a plain ``UNet``); ``source`` starts as its copy.
    """

    def __init__(self, target: UNet) -> None:
        super().__init__()
        self.target = target
        self.source = copy.deepcopy(target)
        self.tied = [n for n, _ in target.named_parameters()]
        self.scale = nn.Parameter(torch.ones(len(self.tied)))
        self.shift = nn.Parameter(torch.zeros(len(self.tied)))
        self.eps = 0.01

    def weight_regularizer(self) -> torch.Tensor:
        """Sum over tied parameter tensors of exp(relative squared affine mismatch) - 1."""
        source = dict(self.source.named_parameters())
        target = dict(self.target.named_parameters())
        terms = []
        for i, n in enumerate(self.tied):
            mismatch = ((self.scale[i] * source[n] + self.shift[i] - target[n]) ** 2).sum()
            norm = (source[n].detach() ** 2).sum() + source[n].numel() * self.eps**2
            terms.append(torch.exp(mismatch / norm) - 1)
        return torch.stack(terms).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)
