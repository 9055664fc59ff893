"""Data-parallel training for the DA trainer: synchronised parameters, gradients and norm statistics.

``DistributedDataParallel`` reduces gradients only for what runs through the wrapped module's
``forward``; the DA trainer calls ``network.encode``/``decode`` directly and optimises the
adaptation objective's own modules (domain classifiers, the reconstruction decoder, the source
stream of a two-stream U-Net) beside the network. ``DataParallelSync`` therefore does DDP's job on
exactly what the optimiser holds: rank 0's parameters and buffers are broadcast when training
starts (after a resume has loaded its checkpoint), gradients are averaged after every backward
pass, and floating-point buffers (batch-norm running statistics) are averaged after every
iteration, so every rank holds the same model at all times.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.handlers import StatsHandler, TensorBoardStatsHandler
from torch import nn


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def for_this_rank(handlers: Sequence) -> list:
    """``handlers`` without the loggers on ranks > 0 (one console log and one TensorBoard run).

    Checkpoint savers stay on every rank: Ignite's ``DiskSaver`` writes on rank 0 only. (The
    TensorBoard handlers of ranks > 0 are still built before this filter runs; give them a
    ``DiscardingWriter`` so they create no event file.)
    """
    if rank() == 0:
        return list(handlers)
    return [h for h in handlers if not isinstance(h, StatsHandler | TensorBoardStatsHandler)]


class DiscardingWriter:
    """A stand-in for ``SummaryWriter`` on ranks > 0: accepts every call, writes nothing, creates no file."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class DataParallelSync:
    """Keep the trainer's network and adaptation objective identical on every rank (see module doc)."""

    def attach(self, engine: Engine) -> None:
        if world_size() == 1:
            return
        engine.add_event_handler(Events.STARTED, self.broadcast)
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.average_gradients)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.average_buffers)

    def _modules(self, engine: Engine) -> list[nn.Module]:
        adaptation = getattr(engine, "adaptation", None)
        return [m for m in (engine.network, adaptation) if m is not None]

    @staticmethod
    def _parameters(engine: Engine) -> list[torch.Tensor]:
        return [p for group in engine.optimizer.param_groups for p in group["params"]]

    def _buffers(self, engine: Engine) -> list[torch.Tensor]:
        seen, out = set(), []
        for module in self._modules(engine):
            for b in module.buffers():
                if b.dtype.is_floating_point and id(b) not in seen:
                    seen.add(id(b))
                    out.append(b)
        return out

    @torch.no_grad()
    def broadcast(self, engine: Engine) -> None:
        """Copy rank 0's parameters (all modules) and buffers to every rank."""
        tensors = {id(t): t for m in self._modules(engine) for t in (*m.parameters(), *m.buffers())}
        for tensor in tensors.values():
            dist.broadcast(tensor.data, src=0)

    @torch.no_grad()
    def average_gradients(self, engine: Engine) -> None:
        """Mean of each optimised parameter's gradient over ranks (a missing gradient counts as zero)."""
        params = self._parameters(engine)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        _all_reduce_mean([p.grad for p in params])

    @torch.no_grad()
    def average_buffers(self, engine: Engine) -> None:
        """Mean of the floating-point buffers (batch-norm running statistics) over ranks."""
        _all_reduce_mean(self._buffers(engine))


def _all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    """In-place mean over ranks, one all-reduce per dtype (tensors flattened into one buffer)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world_size())
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
