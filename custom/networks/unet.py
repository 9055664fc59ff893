"""A U-Net built from MONAI blocks that exposes its encoder features (for feature-level adaptation)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Pool
from torch import nn

StrideT = int | Sequence[int]


class DoubleConv(nn.Sequential):
    """Two (conv, norm, activation) units, the basic block of each U-Net level."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: StrideT, norm: str, act: str, dropout: float
    ) -> None:
        super().__init__(
            Convolution(spatial_dims, in_channels, out_channels, kernel_size=kernel_size, norm=norm, act=act, dropout=dropout),
            Convolution(spatial_dims, out_channels, out_channels, kernel_size=kernel_size, norm=norm, act=act, dropout=dropout),
        )


class UNetDecoder(nn.Module):
    """U-Net decoder: upsample, concatenate the skip feature (when ``skip``), convolve; then a 1x1 head.

    With ``skip=False`` the decoder sees only the bottleneck (Y-Net's reconstruction path).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        strides: Sequence[StrideT],
        kernel_sizes: Sequence[StrideT],
        out_channels: int,
        norm: str,
        act: str,
        dropout: float,
        skip: bool = True,
    ) -> None:
        super().__init__()
        self.skip = skip
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for level in range(len(channels) - 1, 0, -1):
            c_in, c_out = channels[level], channels[level - 1]
            self.ups.append(UpSample(spatial_dims, c_in, c_out, scale_factor=strides[level - 1], mode="deconv"))
            block_in = 2 * c_out if skip else c_out
            self.blocks.append(DoubleConv(spatial_dims, block_in, c_out, kernel_sizes[level - 1], norm, act, dropout))
        self.head = Convolution(spatial_dims, channels[0], out_channels, kernel_size=1, conv_only=True)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for i, (up, block) in enumerate(zip(self.ups, self.blocks)):
            x = up(x)
            if self.skip:
                x = torch.cat([features[-2 - i], x], dim=1)
            x = block(x)
        return self.head(x)


def encode_levels(encoder: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every block of a U-Net ``encoder``, each fed the previous one's (full resolution first)."""
    features = []
    for block in encoder:
        x = block(x)
        features.append(x)
    return features


class UNet(nn.Module):
    """U-Net for 2D or 3D EM with access to per-level encoder features.

    Args:
        spatial_dims: 2 (sections) or 3 (volumes).
        in_channels, out_channels: input channels and classes (2 = background/foreground, softmax).
        channels: feature maps per level, e.g. (16, 32, 64, 128) = 4 levels, 3 downsamplings.
        strides: downsampling factor between levels (int or per-axis tuple for anisotropic 3D data,
            e.g. ((1, 2, 2), (1, 2, 2), (2, 2, 2))); default 2 everywhere.
        kernel_size: convolution kernel of every level (int or per-axis tuple, e.g. (1, 3, 3)).
        kernel_sizes: one kernel per level instead, e.g. ((1, 3, 3), (1, 3, 3), 3, 3) for thick sections.
        norm, act, dropout: MONAI layer names/probability used in every block.

    ``encode(x)`` returns the list of level features (last = bottleneck); ``decode(features)`` the
    segmentation logits; ``forward(x)`` both in one go.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[StrideT] | None = None,
        kernel_size: StrideT = 3,
        kernel_sizes: Sequence[StrideT] | None = None,
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"UNet needs at least 2 levels, got channels={channels}.")
        n = len(channels)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = tuple(channels)
        self.strides = tuple(strides) if strides is not None else (2,) * (n - 1)
        if len(self.strides) != n - 1:
            raise ValueError(f"UNet with {n} levels needs {n - 1} strides, got {self.strides}.")
        kernel_sizes = tuple(kernel_sizes) if kernel_sizes is not None else (kernel_size,) * n
        if len(kernel_sizes) != n:
            raise ValueError(f"UNet with {n} levels needs {n} kernel_sizes, got {kernel_sizes}.")
        self.kernel_sizes = kernel_sizes
        self.block_args = {"norm": norm, "act": act, "dropout": dropout}
        pool = Pool[Pool.MAX, spatial_dims]
        self.encoder = nn.ModuleList()
        for level, c_out in enumerate(channels):
            block = DoubleConv(spatial_dims, channels[level - 1] if level else in_channels, c_out, kernel_sizes[level], norm, act, dropout)
            if level:
                block = nn.Sequential(pool(kernel_size=self.strides[level - 1], stride=self.strides[level - 1]), block)
            self.encoder.append(block)
        self.decoder = UNetDecoder(spatial_dims, channels, self.strides, kernel_sizes, out_channels, norm, act, dropout)

    @property
    def downsampling(self) -> tuple[int, ...]:
        """Total downsampling per spatial axis: window sizes must be multiples of it."""
        total = [1] * self.spatial_dims
        for stride in self.strides:
            per_axis = (stride,) * self.spatial_dims if isinstance(stride, int) else tuple(stride)
            total = [t * int(s) for t, s in zip(total, per_axis)]
        return tuple(total)

    def definition(self) -> dict:
        """The MONAI config component that builds this network (``_target_`` and every argument, as JSON
        types): what a checkpoint records so that inference can build the network it was trained as."""

        def plain(value):
            return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

        return {
            "_target_": "custom.networks.UNet", "spatial_dims": self.spatial_dims, "in_channels": self.in_channels,
            "out_channels": self.out_channels, "channels": plain(self.channels), "strides": plain(self.strides),
            "kernel_sizes": plain(self.kernel_sizes), **self.block_args,
        }  # fmt: skip

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of every level, from full resolution to the bottleneck."""
        return encode_levels(self.encoder, x)

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Segmentation logits from the encoder features."""
        return self.decoder(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def network_downsampling(network: nn.Module) -> tuple[int, ...] | None:
    """The total downsampling per spatial axis of the first U-Net inside ``network`` (None without one)."""
    unet = next((m for m in network.modules() if isinstance(m, UNet)), None)
    return unet.downsampling if unet is not None else None


def check_window_size(network: nn.Module, size: Sequence[int], option: str = "patch_size") -> None:
    """Refuse a patch / window ``size`` (spatial axes, last ones counted) that a U-Net inside ``network``
    cannot downsample evenly, naming ``option`` and the nearest valid sizes; before any training."""
    factors = network_downsampling(network)
    if factors is None:
        return
    size = [int(s) for s in size][-len(factors):]
    if all(s % f == 0 for s, f in zip(size, factors)):
        return
    below = [max(f, s // f * f) for s, f in zip(size, factors)]
    above = [-(-s // f) * f for s, f in zip(size, factors)]
    raise ValueError(
        f"{option} {size} is not divisible by the network's downsampling {list(factors)} per axis; "
        f"use e.g. {below} or {above}."
    )
