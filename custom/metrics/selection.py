"""Label-free model selection and monitoring on the target domain: entropy and foreground share of a network's softmax."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn


@torch.no_grad()
def target_prediction_stats(network: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu") -> dict[str, float]:
    """Label-free summaries of ``softmax(network(x))`` over target batches, per pixel.

    ``entropy``: mean entropy (nats; lower = more confident). ``foreground``: fraction of pixels
    whose most likely class is not class 0; self-training that unlearns the object class shows
    as this fraction falling towards 0 while the entropy falls too.
    """
    was_training = network.training
    network.eval()
    entropy, foreground, count = 0.0, 0.0, 0
    for images in batches:
        probs = torch.softmax(network(images.to(device)), dim=1)
        entropy += float(-(probs * torch.log(probs.clamp(min=1e-8))).sum(1).sum())
        foreground += float((probs.argmax(1) > 0).sum())
        count += probs[:, 0].numel()
    network.train(was_training)
    if count == 0:
        raise ValueError("no target batch to compute prediction statistics on.")
    return {"entropy": entropy / count, "foreground": foreground / count}


def mean_prediction_entropy(network: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu") -> float:
    """Mean per-pixel entropy (nats) of ``softmax(network(x))`` over target batches; lower = more confident.

    Needs no labels, so it can rank checkpoints or runs on an unlabelled target (a common
    unsupervised validation proxy; check its agreement with true IoU where labels exist).
    """
    return target_prediction_stats(network, batches, device)["entropy"]


def spearman(a: Iterable[float], b: Iterable[float]) -> float:
    """Spearman rank correlation of two equally long sequences (no ties handling beyond average ranks)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(list(a)), np.asarray(list(b))).statistic)


class TargetEntropyHandler:
    """After every evaluation, store the target prediction entropy and predicted foreground fraction
    in ``engine.state.metrics`` (as ``name`` and ``foreground_name``).

    Attach to the validation evaluator: both are logged next to the source-validation metrics
    (and to TensorBoard by its stats handler), without ever reading target labels.
    """

    def __init__(self, network: nn.Module, loader: Iterable, name: str = "target_entropy", foreground_name: str = "target_foreground") -> None:
        self.network, self.loader, self.name, self.foreground_name = network, loader, name, foreground_name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        stats = target_prediction_stats(self.network, (batch["image"] for batch in self.loader), engine.state.device)
        engine.state.metrics[self.name] = stats["entropy"]
        engine.state.metrics[self.foreground_name] = stats["foreground"]
