"""Per-epoch reseeding of every random stream of a training run, so that a resume is exact."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.utils import MAX_SEED, set_determinism


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch of one process: a fixed function of the run's seed, the epoch and the rank."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(rank) * 104_729) % MAX_SEED


class EpochSeeding:
    """At every epoch start after the first, reseed torch / numpy / Python and every MONAI random transform
    reachable from ``objects`` (data loaders, datasets, an adaptation objective) from
    ``epoch_seed(seed, epoch, rank)``, and start fresh passes over the data.

    The random state at the start of an epoch then depends on the seed and the epoch alone, never on
    what ran before, so a run resumed from an epoch checkpoint (``--resume true``) draws exactly the
    patches, augmentations and dropout masks an uninterrupted run draws, and ends with identical weights.
    The first epoch keeps the state the bundle's ``set_determinism(seed)`` and data loaders give (a run
    never resumes into its first epoch).
    The engine's ``restart_data_passes`` (``DomainAdaptationTrainer``) drops half-used iterators, so a
    pass never carries over an epoch boundary. Attach it before other handlers that use randomness.
    """

    def __init__(self, seed: int, objects: Sequence[Any] = ()) -> None:
        self.seed = int(seed)
        self.objects = [obj for obj in objects if obj is not None]

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch <= 1:
            return
        seed = epoch_seed(self.seed, engine.state.epoch, idist.get_rank())
        set_determinism(seed=seed)
        for index, obj in enumerate(self.objects):
            set_rnd(obj, seed=(seed + 1_000 * (index + 1)) % MAX_SEED)
        restart = getattr(engine, "restart_data_passes", None)
        if restart is not None:
            restart()
