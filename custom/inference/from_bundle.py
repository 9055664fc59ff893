"""Building the blockwise predictor from a bundle's ``inference.json`` and a trained checkpoint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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


def load_bundle_predictor(
    bundle_root: str | os.PathLike, checkpoint: str | os.PathLike | None = None, config_file: str | os.PathLike | None = None, **overrides: object
) -> tuple[VolumePredictor, ConfigParser]:
    """The bundle's ``predictor`` (``configs/inference.json``) with ``checkpoint`` loaded (``weights_only``).

    ``overrides`` replace config ids (``device``, ``roi_size``, ``sw_batch_size``, ``tta_flip_axes``,
    ``network_def#channels`` ...) exactly like ``monai.bundle run`` overrides. ``checkpoint`` defaults to
    the config's ``checkpoint`` (``<bundle_root>/models/model.pt``). Returns the predictor and the parser.
    """
    bundle_root = Path(bundle_root)
    parser = ConfigParser()
    parser.read_config(str(config_file or bundle_root / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_root)
    parser.update({k: v for k, v in overrides.items() if v is not None})
    checkpoint = checkpoint or parser.get_parsed_content("checkpoint")
    load_pretrained(parser.get_parsed_content("network"), checkpoint, required=True)
    return parser.get_parsed_content("predictor"), parser
