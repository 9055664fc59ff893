"""Saving a test-time adapted network (AdaBN, TENT) as a model file that any inference path can load."""

from __future__ import annotations

import logging
import os

import torch
from ignite.engine import Engine, Events
from torch import nn

from custom.engines.record import RECORD_KEY, read_network_record
from custom.utils.errors import run_or_exit
from custom.utils.io import atomic_path

logger = logging.getLogger(__name__)


def save_adapted_model(evaluator: Engine, network: nn.Module, checkpoint: str | os.PathLike, path: str | os.PathLike) -> str:
    """Run ``evaluator``'s start handlers (the model loader, then the test-time adaptation of
    ``extra_handlers``) without inferring anything, and save ``network`` as it then is to ``path``.

    The file is ``{"model": state dict, "network_record": <checkpoint's record>}``, written
    atomically: ``segment.py`` (blockwise, out-of-core) then deploys exactly the network that the
    evaluation of the same configs measures.
    """
    run_or_exit(lambda: evaluator.fire_event(Events.STARTED))  # a bad checkpoint or target: one line, as the evaluation says it
    state = {"model": network.state_dict()}
    record = read_network_record(checkpoint)
    if record is not None:
        state[RECORD_KEY] = record
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    logger.info("wrote %s (the adapted network)", path)
    return str(path)
