"""Label-free model selection on the target domain: prediction entropy of a network's softmax."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn


@torch.no_grad()
def mean_prediction_entropy(network: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu") -> float:
    """Mean per-pixel entropy (nats) of ``softmax(network(x))`` over target batches; lower = more confident.

    Needs no labels, so it can rank checkpoints or runs on an unlabelled target (a common
    unsupervised validation proxy; check its agreement with true IoU where labels exist).
    """
    was_training = network.training
    network.eval()
    total, count = 0.0, 0
    for images in batches:
        probs = torch.softmax(network(images.to(device)), dim=1)
        entropy = -(probs * torch.log(probs.clamp(min=1e-8))).sum(1)
        total += float(entropy.sum())
        count += entropy.numel()
    network.train(was_training)
    if count == 0:
        raise ValueError("no target batch to compute the prediction entropy on.")
    return total / count


def spearman(a: Iterable[float], b: Iterable[float]) -> float:
    """Spearman rank correlation of two equally long sequences (no ties handling beyond average ranks)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(list(a)), np.asarray(list(b))).statistic)


class TargetEntropyHandler:
    """After every evaluation, store the target prediction entropy in ``engine.state.metrics``.

    Attach to the validation evaluator: the score is logged next to the source-validation metrics
    (and to TensorBoard by its stats handler), without ever reading target labels.
    """

    def __init__(self, network: nn.Module, loader: Iterable, name: str = "target_entropy") -> None:
        self.network, self.loader, self.name = network, loader, name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        batches = (batch["image"] for batch in self.loader)
        engine.state.metrics[self.name] = mean_prediction_entropy(self.network, batches, engine.state.device)
