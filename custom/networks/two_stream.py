"""Two-stream U-Net (Bermúdez-Chacón et al. 2018): related, not shared, source and target encoders, one decoder."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .unet import UNet, encode_levels


class SourceStream(nn.Module):
    """The source stream: its own encoder, and the deployed network's decoder (shared, not copied).

    The decoder is held outside the module tree (it belongs to the target network), so it is trained,
    saved and normalised once, as part of the network that is deployed.
    """

    def __init__(self, target: UNet) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(target.encoder)
        self._target = (target,)  # a tuple: not registered as a submodule

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Source-stream features of every level, from full resolution to the bottleneck."""
        return encode_levels(self.encoder, x)

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits through the shared decoder."""
        return self._target[0].decode(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class TwoStreamUNet(nn.Module):
    """A source encoder and a target encoder whose weights are tied by a regulariser instead of shared,
    with one decoder for both.

    For each encoder parameter tensor l (weights, biases and normalisation affines alike) the
    regulariser is exp(||a_l w_s,l + b_l - w_t,l||² / (||w_s,l||² + n_l ε²)) - 1 with learnable scalars
    a_l, b_l (initialised to 1, 0; one pair per tensor, as in the paper, so the tie cannot be satisfied
    trivially element by element), so each layer may drift by an affine change. The mismatch is
    relative to the source tensor's norm (ε = 0.01 keeps zero-initialised biases finite). ``target``
    is the deployable network (a plain ``UNet``); the source stream's encoder starts as its copy and
    the decoder is ``target``'s own.
    """

    def __init__(self, target: UNet) -> None:
        super().__init__()
        self.target = target
        self.source = SourceStream(target)
        self.tied = [n for n, _ in target.encoder.named_parameters()]
        self.scale = nn.Parameter(torch.ones(len(self.tied)))
        self.shift = nn.Parameter(torch.zeros(len(self.tied)))
        self.eps = 0.01

    def weight_regularizer(self) -> torch.Tensor:
        """Sum over tied encoder parameter tensors of exp(relative squared affine mismatch) - 1."""
        source = dict(self.source.encoder.named_parameters())
        target = dict(self.target.encoder.named_parameters())
        terms = []
        for i, n in enumerate(self.tied):
            mismatch = ((self.scale[i] * source[n] + self.shift[i] - target[n]) ** 2).sum()
            norm = (source[n].detach() ** 2).sum() + source[n].numel() * self.eps**2
            terms.append(torch.exp(mismatch / norm) - 1)
        return torch.stack(terms).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(x)
