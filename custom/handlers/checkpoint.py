"""Resumable training checkpoints (model, optimizer and the trainer's own state)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver

logger = logging.getLogger(__name__)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing through a temporary file and a rename.

    MONAI builds its ``DiskSaver`` with ``atomic=False`` (for group-read permissions that Ignite's
    atomic saver now sets too), so a run killed while saving leaves a truncated checkpoint under
    the final name. Same arguments as ``CheckpointSaver``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            checkpoint = getattr(self, name, None)
            if checkpoint is None:
                continue
            if not hasattr(checkpoint.save_handler, "_atomic"):
                raise RuntimeError("this MONAI/Ignite version's checkpoint saver has no atomic switch; update AtomicCheckpointSaver.")
            checkpoint.save_handler._atomic = True
        self._engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self._engine = engine
        super().attach(engine)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """A failed run writes no final checkpoint (MONAI saves one under the final name): ``model_final.pt``
        only ever holds a finished training; the last epoch checkpoint still allows ``--resume true``."""
        engine.logger.error("training failed (%s): no final checkpoint written.", type(e).__name__)
        raise e

    def state_dict(self) -> dict:
        """The best key metric so far, its epoch and the file kept for it, so a resumed run replaces the best
        model only when it beats it (a fresh tracker would take its first validation as a new best)."""
        saved = self._key_metric_checkpoint.state_dict()["_saved"] if self._key_metric_checkpoint is not None else []
        state = getattr(self._engine, "state", None)
        return {
            "saved": [[float(priority), str(name)] for priority, name in saved],
            "best_metric": float(getattr(state, "best_metric", -1.0)),
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.load_state_dict({"_saved": [tuple(item) for item in state_dict["saved"]]})
        if self._engine is not None:
            self._engine.state.best_metric = state_dict["best_metric"]
            self._engine.state.best_metric_epoch = state_dict["best_metric_epoch"]


def _checkpoints_by_epoch(save_dir: str, prefix: str) -> list[Path]:
    """``<prefix>_checkpoint_*.pt`` files in ``save_dir``, oldest epoch first."""

    def number(path: Path) -> int:
        digits = "".join(c for c in path.stem.rsplit("=", 1)[-1] if c.isdigit())
        return int(digits) if digits else -1

    return sorted(Path(save_dir).glob(f"{prefix}_checkpoint_*.pt"), key=number)


def latest_checkpoint(save_dir: str, prefix: str = "train") -> Path | None:
    """The newest ``<prefix>_checkpoint_*.pt`` in ``save_dir`` by epoch number, or None."""
    candidates = _checkpoints_by_epoch(save_dir, prefix)
    return candidates[-1] if candidates else None


SNAPSHOT_PREFIX = "snapshot"  # train.json's ``file_prefix`` of the checkpoint kept at ``snapshot_epoch``


def snapshot_epoch(max_epochs: int) -> int:
    """The epoch whose model a training of ``max_epochs`` keeps beside its final one (train.json's
    ``snapshot_at_epoch``, the interval of a ``CheckpointSaver`` keeping one file): 3/4 of the way, for agreement
    across checkpoints of one run; 0 (none) below 3 epochs, where that interval would save the last epoch too."""
    return max_epochs * 3 // 4 if max_epochs >= 3 else 0


def snapshot_checkpoint(save_dir: str | Path, max_epochs: int) -> Path | None:
    """The checkpoint a finished training of ``max_epochs`` kept at ``snapshot_epoch`` in ``save_dir``, or
    None when it keeps none or the file is absent (a training made before snapshots were kept)."""
    epoch = snapshot_epoch(max_epochs)
    path = Path(save_dir) / f"{SNAPSHOT_PREFIX}_checkpoint_epoch={epoch}.pt"
    return path if epoch and path.exists() else None


def _held_by(path: Path, objects: dict) -> dict:
    """The entries of ``objects`` that the checkpoint at ``path`` holds; the others are named in a warning."""
    held = torch.load(path, map_location="cpu", weights_only=True).keys()
    missing = [name for name in objects if name not in held]
    if missing:
        logger.warning("%s holds no %s; %s resume(s) from a fresh state.", path, ", ".join(missing), "they" if len(missing) > 1 else "it")
    return {name: obj for name, obj in objects.items() if name in held}


class TrainingCheckpoint:
    """Save ``save_dict`` plus the trainer itself every ``save_interval`` epochs; optionally resume.

    The trainer cannot be named inside its own handler list in a bundle config (a circular
    reference), so it is added here at ``attach``. With ``resume`` the newest checkpoint in
    ``save_dir`` (if any) is loaded before training starts (``torch.load(weights_only=True)``), and
    training continues from its epoch. Files are written atomically (``AtomicCheckpointSaver``).
    ``save_dict`` entries that are None (e.g. no adaptation objective) are left out; an object the
    checkpoint does not hold (one written before it was saved) keeps its fresh state, with a warning.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        save_interval: int = 1,
        n_saved: int = 1,
        resume: bool = False,
        file_prefix: str = "train",
    ) -> None:
        self.save_dir = save_dir
        self.save_dict = {name: obj for name, obj in save_dict.items() if obj is not None}
        self.save_interval = save_interval
        self.n_saved = n_saved
        self.resume = resume
        self.file_prefix = file_prefix

    def attach(self, engine: Engine) -> None:
        self._started = time.time()
        self._leftovers = _checkpoints_by_epoch(self.save_dir, self.file_prefix)
        objects = {**self.save_dict, "trainer": engine}
        if self.resume:
            path = latest_checkpoint(self.save_dir, self.file_prefix)
            if path is None:
                logger.warning("resume requested but %s holds no %s_checkpoint_*.pt; starting fresh.", self.save_dir, self.file_prefix)
            else:
                CheckpointLoader(load_path=str(path), load_dict=_held_by(path, objects), map_location="cpu").attach(engine)
        AtomicCheckpointSaver(
            save_dir=self.save_dir,
            save_dict=objects,
            file_prefix=self.file_prefix,
            save_interval=self.save_interval,
            epoch_level=True,
            n_saved=self.n_saved,
        ).attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self._drop_older)

    def _drop_older(self, engine: Engine) -> None:
        """Once this run has saved, delete the checkpoints an earlier run left (resumed from or not).

        Ignite keeps this run's newest ``n_saved``; files found at ``attach`` and not rewritten since
        are the earlier run's, which Ignite does not track (a longer, killed run may have left a
        higher epoch than this one has reached).
        """
        if idist.get_rank() == 0:
            for stale in self._leftovers:
                if stale.exists() and stale.stat().st_mtime < self._started:
                    stale.unlink()
            self._leftovers = []
