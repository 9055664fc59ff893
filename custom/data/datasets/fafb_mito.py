"""Adult fly brain (FAFB, Zheng et al. 2018) mitochondria crops published with Wu et al., MICCAI 2021.

8 sections of 1736 x 1736, ~40 nm sections. The upstream repository states no licence: use for
evaluation, do not redistribute.

Pixel size: FAFB is imaged at 4 x 4 nm, but these crops are taken as 8 x 8 nm, the volume's
first 2x-downsampled level. No upstream file states their pixel size; the image content points
there: synaptic vesicles (about 35-40 nm across in fly neuropil) span about 4 pixels here, which
at 4 nm would make them about 16 nm; and the crops were published to evaluate models trained on
MitoEM (8 nm pixels) without resampling.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from custom.data.readers import read_label, read_volume

from ._fetch import fetch_registered

NAME = "fafb_mito"
COMMIT = "6d66579175809a700b2f47b292595e1f9937a849"
URL = f"https://raw.githubusercontent.com/ngchc/DA-MitoSeg/{COMMIT}/fafb-valid/"
SPACING_NM = (40.0, 8.0, 8.0)  # (z, y, x) nm: see the module docstring
CITATION = "Zheng Z et al. A complete electron microscopy volume of the brain of adult Drosophila melanogaster. Cell 2018."


def get_fafb_mito_paths(root: str | os.PathLike, download: bool = False) -> dict[str, Path]:
    """Folders of the FAFB crops under ``root/fafb_mito`` (downloading them if asked)."""
    folder = fetch_registered(NAME, URL, root, download)
    return {"image": folder / "im", "label": folder / "seg"}


def load_fafb_mito(root: str | os.PathLike, download: bool = False) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(image, binary mitochondria label, spacing); masks are RGB(A), channel 0 > 127 = foreground."""
    paths = get_fafb_mito_paths(root, download)
    image, _ = read_volume(paths["image"])
    label, _ = read_label(paths["label"], threshold=127, channel=0)
    return image, label, SPACING_NM
