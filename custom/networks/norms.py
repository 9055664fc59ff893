"""Where a network keeps its batch normalisation: the layers AdaBN, TENT and the mean teacher act on,
and a second domain's running statistics for them (DSBN)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def batch_norms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of ``network`` (1D, 2D, 3D and synchronised), in module order."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


RUNNING_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


class DomainStatistics(nn.Module):
    """A second set of running batch-norm statistics for every layer of ``network``: domain-specific
    statistics (DSBN, Chang et al. 2019) with the affine parameters shared.

    The network keeps one domain's statistics (the deployed, target domain's); this module keeps the
    other's, initialised as a copy. Inside ``active()`` the two sets are swapped, so a forward there
    normalises with, and updates, this module's statistics. Its buffers are checkpointed with whatever
    module holds it (the adaptation objective), so a resumed run continues both sets exactly.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self._layers = [m for m in batch_norms(network) if m.track_running_stats]  # a plain list: not submodules
        if not self._layers:
            raise ValueError("domain-specific statistics need a network with batch-norm layers that track running statistics.")
        for i, layer in enumerate(self._layers):
            for name in RUNNING_STATISTICS:
                self.register_buffer(f"{name}_{i}", getattr(layer, name).detach().clone())

    def _swap(self) -> None:
        for i, layer in enumerate(self._layers):
            for name in RUNNING_STATISTICS:
                mine = getattr(self, f"{name}_{i}")
                setattr(self, f"{name}_{i}", getattr(layer, name))
                setattr(layer, name, mine)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Forwards inside use (and, in training mode, update) this module's statistics."""
        self._swap()
        try:
            yield
        finally:
            self._swap()
