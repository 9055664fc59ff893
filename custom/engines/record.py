"""What a saved model records besides its weights: the network it is, and how its inputs were prepared.

Training saves ``{"model": <state dict>, "network_record": {...}}`` (``NetworkRecord`` in the savers'
``save_dict``), so that ``inference.json`` builds the recorded network, window and pixel size by
default (``recorded``) and a conflicting explicit setting is refused with one clear error
(``check_recorded_network``) instead of a state-dict traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

RECORD_KEY = "network_record"
NORMALISATION = "z-score per volume"


class NetworkRecord:
    """A ``save_dict`` entry for MONAI/Ignite checkpoint savers whose state is the record of ``network``."""

    def __init__(self, network: nn.Module, pixel_size_nm: float, roi_size: Sequence[int], normalisation: str = NORMALISATION) -> None:
        self.network, self.pixel_size_nm, self.roi_size, self.normalisation = network, pixel_size_nm, roi_size, normalisation

    def state_dict(self) -> dict:
        return {
            "network_def": self.network.definition(), "pixel_size_nm": float(self.pixel_size_nm),
            "roi_size": [int(r) for r in self.roi_size], "normalisation": self.normalisation,
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """A record describes what was saved; nothing is restored from it."""


@functools.lru_cache(maxsize=8)
def _record(path: str, mtime_ns: int) -> dict | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a checkpoint: the model loader reports it
        return None
    record = state.get(RECORD_KEY) if isinstance(state, dict) else None
    return record if isinstance(record, dict) else None


def read_network_record(checkpoint: str | os.PathLike | None) -> dict | None:
    """The ``network_record`` of a checkpoint, or None (no file, no record, not a checkpoint)."""
    if not checkpoint or not os.path.isfile(checkpoint):
        return None
    return _record(os.path.realpath(checkpoint), os.stat(checkpoint).st_mtime_ns)


def recorded(checkpoint: str | os.PathLike | None, key: str, default: Any, spatial_dims: int | None = None) -> Any:
    """The value at ``key`` (``#``- or ``::``-separated, e.g. ``network_def#spatial_dims``) of the checkpoint's
    record, or ``default`` when the checkpoint or its record does not say. With ``spatial_dims``, also
    ``default`` when the record is of a network of other dimensions (for per-axis values such as
    strides or the window, whose length follows the dimensions an explicit setting asks for)."""
    node: Any = read_network_record(checkpoint)
    if spatial_dims is not None and recorded(checkpoint, "network_def#spatial_dims", spatial_dims) != spatial_dims:
        return default
    for part in key.replace("::", "#").split("#"):  # MONAI rewrites "#" in config strings to its newer "::" separator
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def check_recorded_network(network: nn.Module, checkpoint: str | os.PathLike) -> None:
    """Raise ``CheckpointError`` when ``network`` is not the network ``checkpoint`` records (an explicit
    setting that conflicts with the record), naming each differing argument and the recorded value."""
    from .utils import CheckpointError

    record = read_network_record(checkpoint)
    definition = getattr(network, "definition", None)
    if record is None or "network_def" not in record or definition is None:
        return
    built, saved = definition(), record["network_def"]
    differ = sorted((k for k in set(built) | set(saved) if built.get(k) != saved.get(k)), key=lambda k: (k != "spatial_dims", k))
    if differ:
        said = ", ".join(f"{k} {saved.get(k)!r} (the config builds {built.get(k)!r})" for k in differ)
        raise CheckpointError(
            f"{checkpoint}: records a network with {said}; drop the setting(s) that override the record "
            f"(e.g. --{'network_def#' if differ[0] != 'spatial_dims' else ''}{differ[0]}) so the recorded network is built."
        )
