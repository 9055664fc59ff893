"""Loading a trained model into an evaluator before it runs, with one clear error for a bad checkpoint."""

from __future__ import annotations

import os

from ignite.engine import Engine, Events
from torch import nn

from custom.engines.utils import load_pretrained


class ModelLoader:
    """Load ``load_path`` into ``network`` when the engine starts (``custom.engines.load_pretrained``).

    Replaces MONAI's ``CheckpointLoader`` in inference and evaluation configs: a missing file, a file
    that is no PyTorch checkpoint, or a checkpoint of another architecture ends the run before any
    data is read, with a ``CheckpointError`` naming the file and both architectures (MONAI's loader
    answers these with a long state-dict traceback). Weights are read with ``weights_only=True``.
    """

    def __init__(self, load_path: str | os.PathLike, network: nn.Module) -> None:
        self.load_path = load_path
        self.network = network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        load_pretrained(self.network, self.load_path, required=True)
