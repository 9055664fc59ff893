"""The domain-adaptation trainer: MONAI's SupervisedTrainer with paired source/target batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch import nn

from custom.networks import DomainStatistics

from .objectives import AdaptationObjective, DomainBatch

TERM_PREFIX = "loss_"
BATCH_NORM_MODES = ("separate", "joint", "domain_specific")


def loss_terms(output: dict | list[dict]) -> dict[str, float]:
    """The named loss terms of one iteration's output (decollated or not), for Stats/TensorBoard handlers."""
    item = output[0] if isinstance(output, list) else output
    return {k[len(TERM_PREFIX) :]: float(v) for k, v in item.items() if isinstance(k, str) and k.startswith(TERM_PREFIX)}


def _cycle(loader: Iterable) -> Iterator:
    """Iterate over ``loader`` forever, starting a new pass (new random patches) when one ends."""
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("a target data loader yielded no batch; check its datalist and patch size.")


class DomainAdaptationTrainer(SupervisedTrainer):
    """Supervised training on labelled source batches plus adaptation to an unlabelled target.

    Expects (beside everything ``SupervisedTrainer`` takes):

    - ``train_data_loader``: labelled **source** batches (``image``, ``label``); it defines the epoch.
    - ``target_data_loader``: unlabelled **target** batches (``image``), drawn once per iteration and
      cycled when exhausted; required when ``adaptation`` is given.
    - ``target_labelled_loader``: optional labelled target batches (semi-supervised adaptation); their
      segmentation loss is added with weight ``target_seg_weight``.
    - ``adaptation``: an ``AdaptationObjective`` returning weighted loss terms from the source and
      target features (MMD, CORAL, DANN, reconstruction, two-stream, mean teacher, ...).
    - ``grad_clip_norm``: clip the global gradient norm (None = off).
    - ``batch_norm_mode``: how source and target batches meet batch norm when adapting. ``separate``
      (default): one forward per domain, so each is normalised with its own batch statistics, which
      also removes per-channel differences from the features the alignment losses compare.
      ``joint``: one forward of the concatenated source + target batch through encoder and decoder,
      so both share the statistics, as at test time (as in most DANN/MMD code). ``domain_specific``:
      domain-specific running statistics (DSBN, Chang et al. 2019, affine parameters shared): each
      domain is forwarded through encoder and decoder with its own statistics; the network keeps
      the target's (every saved model is the deployable one), the source's live in
      ``custom.networks.DomainStatistics``, held by the objective so checkpoints carry them. Neither
      mode is for the two-stream objective, whose domains have different encoders.
    - ``train_handlers``: as ``SupervisedTrainer``'s; attached after the objective's end-of-training
      hook, so a final-model saver stores what the objective leaves (e.g. a deployed EMA teacher).

    The total loss is seg(source) [+ seg(target labelled)] + Σ terms. Every term is stored in
    ``engine.state.output["loss_<name>"]`` (floats; read them with ``loss_terms``) for logging. The network must offer ``encode`` and
    ``decode`` (``custom.networks.UNet``). With no objective and no labelled target loader one
    iteration equals ``SupervisedTrainer``'s.
    """

    def __init__(
        self,
        *args,
        target_data_loader: Iterable | None = None,
        target_labelled_loader: Iterable | None = None,
        adaptation: AdaptationObjective | None = None,
        target_seg_weight: float = 1.0,
        grad_clip_norm: float | None = None,
        train_handlers: Sequence | None = None,
        batch_norm_mode: str = "separate",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if adaptation is not None and target_data_loader is None:
            raise ValueError("an adaptation objective needs target_data_loader (unlabelled target batches).")
        if batch_norm_mode not in BATCH_NORM_MODES:
            raise ValueError(f"batch_norm_mode must be one of {BATCH_NORM_MODES}, got {batch_norm_mode!r}.")
        if batch_norm_mode != "separate" and adaptation is not None and adaptation.source_network(self.network) is not self.network:
            raise ValueError(f"batch_norm_mode {batch_norm_mode!r} needs one network for both domains; this objective has a source stream of its own (two-stream).")
        if batch_norm_mode == "domain_specific" and adaptation is not None:
            adaptation.source_statistics = DomainStatistics(self.network)  # the source's, beside the network's (target) statistics
        self.batch_norm_mode = batch_norm_mode
        self.adaptation = adaptation.to(self.state.device) if adaptation is not None else None
        if self.adaptation is not None:  # before the handlers, so the final-model saver sees what it leaves
            self.add_event_handler(Events.COMPLETED, self.adaptation.training_completed)
        if train_handlers is not None:
            self._register_handlers(train_handlers)
        self.target_data_loader = target_data_loader
        self.target_labelled_loader = target_labelled_loader
        self.target_seg_weight = target_seg_weight
        self.grad_clip_norm = grad_clip_norm
        self._target_iter: Iterator | None = None
        self._labelled_iter: Iterator | None = None
        self.target_batches_drawn = 0

    def restart_data_passes(self) -> None:
        """Start new passes over the source and target loaders at the next draw (``EpochSeeding`` calls it
        at each epoch start, after reseeding, so no half-used pass carries over an epoch boundary)."""
        self._dataloader_iter = None
        self._target_iter = None
        self._labelled_iter = None

    def _next_target(self, labelled: bool) -> dict:
        if labelled:
            self._labelled_iter = self._labelled_iter or _cycle(self.target_labelled_loader)
            return next(self._labelled_iter)
        self._target_iter = self._target_iter or _cycle(self.target_data_loader)
        self.target_batches_drawn += 1
        return next(self._target_iter)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.state.device, non_blocking=self.non_blocking)

    def _domain_batches(self, network: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[DomainBatch, DomainBatch | None]:
        """The source batch and, when adapting, the target batch, forwarded as ``batch_norm_mode`` says."""
        if self.adaptation is None:
            return DomainBatch(inputs, network.encode(inputs), network.decode, labels=targets), None
        images = self._to_device(self._next_target(labelled=False)[Keys.IMAGE])
        if self.batch_norm_mode == "joint":
            n = inputs.shape[0]
            features = network.encode(torch.cat([inputs, images]))
            logits = network.decode(features)
            source = DomainBatch(inputs, [f[:n] for f in features], network.decode, labels=targets, logits=logits[:n])
            return source, DomainBatch(images, [f[n:] for f in features], network.decode, logits=logits[n:])
        if self.batch_norm_mode == "domain_specific":
            with self.adaptation.source_statistics.active():
                features = network.encode(inputs)
                source = DomainBatch(inputs, features, network.decode, labels=targets, logits=network.decode(features))
            features = network.encode(images)  # decoded too, so every layer tracks target statistics
            return source, DomainBatch(images, features, network.decode, logits=network.decode(features))
        source_net = self.adaptation.source_network(network)
        source = DomainBatch(inputs, source_net.encode(inputs), source_net.decode, labels=targets)
        return source, DomainBatch(images, encoder=network.encode, decoder=network.decode)

    def _losses(self, engine: Engine, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        network = engine.network
        source, target = self._domain_batches(network, inputs, targets)
        engine.state.output[Keys.PRED] = source.logits
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        terms = {"seg": engine.loss_function(source.logits, targets).mean()}
        if target is not None:
            terms.update(self.adaptation(network, source, target))
        if self.target_labelled_loader is not None:
            batch = self._next_target(labelled=True)
            images, labels = self._to_device(batch[Keys.IMAGE]), self._to_device(batch[Keys.LABEL])
            terms["seg_target"] = self.target_seg_weight * engine.loss_function(network(images), labels).mean()
        return terms

    def _iteration(self, engine: Engine, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)[:2]
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        if self.adaptation is not None:
            self.adaptation.train()
            self.adaptation.iteration_started(engine)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        autocast = torch.autocast("cuda", **engine.amp_kwargs) if engine.amp and engine.scaler is not None else None
        with autocast or torch.enable_grad():
            terms = self._losses(engine, inputs, targets)
            loss = torch.stack(list(terms.values())).sum()
        engine.state.output[Keys.LOSS] = loss
        engine.state.output.update({f"{TERM_PREFIX}{k}": float(v.detach()) for k, v in terms.items()})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        params = [p for group in engine.optimizer.param_groups for p in group["params"]]
        if autocast is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if self.grad_clip_norm:
                engine.scaler.unscale_(engine.optimizer)
                nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if self.grad_clip_norm:
                nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
            engine.optimizer.step()
        if self.adaptation is not None:
            self.adaptation.iteration_completed(engine)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
