"""Building the blockwise predictor from a bundle's ``inference.json`` and a trained checkpoint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from custom.engines.utils import load_pretrained

from .predictor import VolumePredictor


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file (identifies the model in a segmentation's fingerprint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_parser(bundle_root: str | os.PathLike, config_file: str | os.PathLike | None = None, **overrides: object) -> ConfigParser:
    """The bundle's ``configs/inference.json`` (or ``config_file``) with ``bundle_root`` set and ``overrides``
    (config ids such as ``device``, ``roi_size``, ``network_def#channels``; None values are ignored) applied."""
    parser = ConfigParser()
    parser.read_config(str(config_file or Path(bundle_root) / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_root)
    parser.update({k: v for k, v in overrides.items() if v is not None})
    return parser


def load_bundle_network(
    bundle_root: str | os.PathLike, checkpoint: str | os.PathLike | None = None, **overrides: object
) -> tuple[torch.nn.Module, ConfigParser]:
    """The bundle's ``network`` with ``checkpoint`` loaded (``weights_only``; default: the config's
    ``checkpoint``, ``<bundle_root>/models/model.pt``), in eval mode, and the parser. The network,
    window and pixel size are the ones the checkpoint records unless ``overrides`` set them."""
    parser = bundle_parser(bundle_root, checkpoint=str(checkpoint) if checkpoint else None, **overrides)  # its record shapes the network
    network = parser.get_parsed_content("network")
    load_pretrained(network, parser.get_parsed_content("checkpoint"), required=True)
    return network.eval(), parser


def load_bundle_predictor(
    bundle_root: str | os.PathLike, checkpoint: str | os.PathLike | None = None, **overrides: object
) -> tuple[VolumePredictor, ConfigParser]:
    """The bundle's ``predictor`` (``inference.json``) around ``load_bundle_network``'s network.

    ``overrides`` replace config ids (``device``, ``roi_size``, ``sw_batch_size``, ``tta_flip_axes``,
    ``network_def#channels`` ...) exactly like ``monai.bundle run`` overrides.
    """
    _, parser = load_bundle_network(bundle_root, checkpoint, **overrides)
    return parser.get_parsed_content("predictor"), parser
