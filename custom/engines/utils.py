"""Helpers the bundle configs call: optimiser parameter lists and pretrained weights."""

from __future__ import annotations

import os

import torch
from torch import nn

from custom.utils.errors import UserInputError

from .record import check_recorded_network


def trainable_parameters(*modules: nn.Module | None, freeze_encoder: bool = False) -> list[nn.Parameter]:
    """Parameters of ``modules`` that require gradients, each once (shared submodules are deduplicated).

    With ``freeze_encoder`` the first module's ``encoder`` is frozen (Y-Net/FT decoder fine-tuning).
    """
    if freeze_encoder and modules and modules[0] is not None:
        for p in modules[0].encoder.parameters():
            p.requires_grad_(False)
    seen: set[int] = set()
    params = []
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


class CheckpointError(UserInputError):
    """A checkpoint that is missing, not a PyTorch state dict, or of another network: the message says which."""


def describe_state(state: dict) -> str:
    """A short description of the network a state dict holds: spatial dims, input channels, widths, tensor count."""
    convs = [v for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) >= 4]
    if not convs:
        return f"{len(state)} tensors, no convolution"
    widths = list(dict.fromkeys(int(w.shape[0]) for w in convs))
    return f"{convs[0].ndim - 2}D, {int(convs[0].shape[1])} input channel(s), conv widths {widths[:6]}, {len(state)} tensors"


def read_model_state(checkpoint: str | os.PathLike) -> dict:
    """The model state dict in a ``model.pt`` (plain, or nested under ``model``), loaded with ``weights_only=True``."""
    if not os.path.isfile(checkpoint):
        raise CheckpointError(f"{checkpoint}: checkpoint not found (expected a model.pt from a training run).")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors: the file is no checkpoint of ours
        raise CheckpointError(
            f"{checkpoint}: cannot be read as a PyTorch checkpoint ({type(err).__name__}); expected a model.pt "
            "written by this project's training. Only plain tensors are loaded, never arbitrary pickled code."
        ) from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{checkpoint}: holds no model state dict (expected tensors by parameter name).")
    return state


def load_pretrained(network: nn.Module, checkpoint: str | os.PathLike | None, required: bool = False) -> nn.Module:
    """Load a ``model.pt`` state dict (``weights_only=True``) into ``network``; no-op for an empty path.

    Accepts a plain state dict or a checkpoint holding one under ``model``. With ``required`` an
    empty path is an error (e.g. fine-tuning needs a source-trained model). A checkpoint of another
    architecture is refused with both architectures described, not a list of size mismatches.
    """
    if not checkpoint:
        if required:
            raise CheckpointError("a pretrained checkpoint is required: pass --pretrained_checkpoint <path to model.pt>.")
        return network
    state = read_model_state(checkpoint)
    check_recorded_network(network, checkpoint)
    expected = network.state_dict()
    wrong = sorted(set(state) ^ set(expected)) or [k for k in state if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise CheckpointError(
            f"{checkpoint}: holds a network ({describe_state(state)}) that is not the one the config builds "
            f"({describe_state(expected)}); {len(wrong)} tensor(s) differ, e.g. {wrong[0]!r}. Pass the settings it was "
            "trained with (e.g. --spatial_dims, --network_def#channels) or the matching bundle."
        )
    network.load_state_dict(state)
    return network
