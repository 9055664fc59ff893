"""Resumable training checkpoints (model, optimizer and the trainer's own state)."""

from __future__ import annotations

import logging
from pathlib import Path

from ignite.engine import Engine
from monai.handlers import CheckpointLoader, CheckpointSaver

logger = logging.getLogger(__name__)


def latest_checkpoint(save_dir: str, prefix: str = "train") -> Path | None:
    """The newest ``<prefix>_checkpoint_*.pt`` in ``save_dir`` by epoch number, or None."""
    candidates = list(Path(save_dir).glob(f"{prefix}_checkpoint_*.pt"))

    def number(path: Path) -> int:
        digits = "".join(c for c in path.stem.rsplit("=", 1)[-1] if c.isdigit())
        return int(digits) if digits else -1

    return max(candidates, key=number) if candidates else None


class TrainingCheckpoint:
    """Save ``save_dict`` plus the trainer itself every ``save_interval`` epochs; optionally resume.

    The trainer cannot be named inside its own handler list in a bundle config (a circular
    reference), so it is added here at ``attach``. With ``resume`` the newest checkpoint in
    ``save_dir`` (if any) is loaded before training starts (``torch.load(weights_only=True)``), and
    training continues from its epoch. Files are written atomically by Ignite's ``DiskSaver``.
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
        self.save_dict = dict(save_dict)
        self.save_interval = save_interval
        self.n_saved = n_saved
        self.resume = resume
        self.file_prefix = file_prefix

    def attach(self, engine: Engine) -> None:
        objects = {**self.save_dict, "trainer": engine}
        if self.resume:
            path = latest_checkpoint(self.save_dir, self.file_prefix)
            if path is None:
                logger.warning("resume requested but %s holds no %s_checkpoint_*.pt; starting fresh.", self.save_dir, self.file_prefix)
            else:
                CheckpointLoader(load_path=str(path), load_dict=objects, map_location="cpu").attach(engine)
        CheckpointSaver(
            save_dir=self.save_dir,
            save_dict=objects,
            file_prefix=self.file_prefix,
            save_interval=self.save_interval,
            epoch_level=True,
            n_saved=self.n_saved,
        ).attach(engine)
