"""TENT (Wang et al. 2021): test-time entropy minimisation over the batch-norm affine parameters."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable

import torch
from ignite.engine import Engine, Events
from torch import nn

from custom.networks import batch_norms

logger = logging.getLogger(__name__)


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel Shannon entropy (nats) of the class distribution ``softmax(logits)`` over dim 1."""
    log_p = torch.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def minimize_entropy(
    network: nn.Module,
    batches: Iterable[torch.Tensor],
    steps: int,
    lr: float = 1e-3,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Adapt ``network`` to unlabelled target ``batches`` by minimising its prediction entropy.

    Only the batch-norm scales and shifts are optimised (Adam, ``lr``); every other weight stays
    as trained. The batch-norm layers run in training mode, so their running statistics also move
    to the target domain (as in AdaBN). One update per batch, at most ``steps`` (fewer if ``batches`` ends).
    A network returning a tuple (Y-Net) is adapted through its first output, the segmentation.
    Returns the entropy before each step; the network's train/eval mode and ``requires_grad``
    flags are restored.
    """
    norms = [m for m in batch_norms(network) if m.affine]
    if not norms:
        raise ValueError("TENT needs a network with affine batch-normalisation layers.")
    if steps < 1:
        raise ValueError(f"TENT needs at least one step, got steps={steps}.")
    params = [p for m in norms for p in (m.weight, m.bias)]
    flags = {p: p.requires_grad for p in network.parameters()}
    was_training = network.training
    for p in network.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    network.train()
    entropies: list[float] = []
    try:
        with torch.enable_grad():
            for images in itertools.islice(batches, steps):
                output = network(images.to(device))
                loss = prediction_entropy(output[0] if isinstance(output, (tuple, list)) else output)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                entropies.append(float(loss.detach()))
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        network.train(was_training)
    if not entropies:
        raise ValueError("TENT received no target batch.")
    return entropies


class TENTHandler:
    """At the start of an evaluation, adapt the network to target patches by entropy minimisation.

    ``loader`` yields dicts with ``image`` patches of the target domain (unlabelled); it is
    re-iterated (fresh random crops) until ``steps`` updates are done. Attach after the
    ``CheckpointLoader`` so the loaded weights are adapted, not overwritten.
    """

    def __init__(self, network: nn.Module, loader: Iterable, steps: int = 40, lr: float = 1e-3) -> None:
        self.network, self.loader, self.steps, self.lr = network, loader, steps, lr

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def _batches(self) -> Iterable[torch.Tensor]:
        """The loader's images, pass after pass; stops after a pass that yields nothing."""
        while True:
            empty = True
            for batch in self.loader:
                empty = False
                yield batch["image"]
            if empty:
                return

    def __call__(self, engine: Engine) -> None:
        entropies = minimize_entropy(self.network, self._batches(), self.steps, self.lr, engine.state.device)
        logger.info("TENT: %d steps, prediction entropy %.4f -> %.4f", len(entropies), entropies[0], entropies[-1])
