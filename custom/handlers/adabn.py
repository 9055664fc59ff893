"""AdaBN (Li et al. 2016): re-estimate batch-norm statistics on target data before inference."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from ignite.engine import Engine, Events
from torch import nn

from custom.networks import batch_norms

logger = logging.getLogger(__name__)


@torch.no_grad()
def adapt_batchnorm(network: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu") -> int:
    """Replace every batch-norm layer's running mean/var by their average over ``batches``.

    Weights are untouched; only the normalisation statistics move to the target domain. Returns
    the number of batches used.
    """
    norms = batch_norms(network)
    if not norms:
        raise ValueError("AdaBN needs a network with batch normalisation layers.")
    was_training = network.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    network.train()
    count = 0
    for images in batches:
        network(images.to(device))
        count += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    network.train(was_training)
    if count == 0:
        raise ValueError("AdaBN received no target batch.")
    return count


class AdaBNHandler:
    """At the start of an evaluation, re-estimate the network's batch-norm statistics on target patches.

    ``loader`` yields dicts with ``image`` patches of the target domain (unlabelled). Attach after
    the ``CheckpointLoader`` so the loaded weights are adapted, not overwritten.
    """

    def __init__(self, network: nn.Module, loader: Iterable, enabled: bool = True) -> None:
        self.network, self.loader, self.enabled = network, loader, enabled

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        count = adapt_batchnorm(self.network, (batch["image"] for batch in self.loader), engine.state.device)
        logger.info("AdaBN: batch-norm statistics re-estimated on %d target batches", count)
