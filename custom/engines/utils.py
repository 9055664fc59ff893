"""Helpers the bundle configs call: optimiser parameter lists and pretrained weights."""

from __future__ import annotations

import os

import torch
from torch import nn


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


def load_pretrained(network: nn.Module, checkpoint: str | os.PathLike | None, required: bool = False) -> nn.Module:
    """Load a ``model.pt`` state dict (``weights_only=True``) into ``network``; no-op for an empty path.

    Accepts a plain state dict or a checkpoint holding one under ``model``. With ``required`` an
    empty path is an error (e.g. fine-tuning needs a source-trained model).
    """
    if not checkpoint:
        if required:
            raise ValueError("a pretrained checkpoint is required: pass --pretrained_checkpoint <path to model.pt>.")
        return network
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"pretrained checkpoint {checkpoint} not found (expected a model.pt from a training run).")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    network.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    return network
