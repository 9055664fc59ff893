"""Where a network keeps its batch normalisation: the layers AdaBN, TENT and the mean teacher act on."""

from __future__ import annotations

from torch import nn


def batch_norms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of ``network`` (1D, 2D, 3D and synchronised), in module order."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
