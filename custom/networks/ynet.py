"""Y-Net (Roels et al. 2019): a U-Net plus a decoder that reconstructs the input from the bottleneck."""

from __future__ import annotations

import torch
from torch import nn

from .unet import UNet, UNetDecoder


def reconstruction_decoder_like(unet: UNet) -> UNetDecoder:
    """A decoder mirroring ``unet``'s levels that outputs the input channels and has no skip connections.

    Without skips the reconstruction must pass through the bottleneck, so it cannot copy the input;
    this forces the shared encoder to keep information about both domains.
    """
    return UNetDecoder(
        unet.spatial_dims,
        unet.channels,
        unet.strides,
        unet.kernel_sizes,
        out_channels=unet.in_channels,
        skip=False,
        **unet.block_args,
    )


class YNet(nn.Module):
    """Segmentation U-Net and reconstruction decoder sharing one encoder.

    ``forward(x)`` returns (segmentation logits, reconstruction). The segmentation path alone is
    ``ynet.unet`` — a plain ``UNet`` that inference configs load unchanged.
    """

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.unet = unet
        self.reconstruction = reconstruction_decoder_like(unet)

    def reconstruct(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Reconstruction of the input from the encoder features (only the bottleneck is used)."""
        return self.reconstruction(features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.unet.encode(x)
        return self.unet.decode(features), self.reconstruct(features)
