"""Drosophila larva VNC ssTEM (Gerhard et al. 2013): mitochondria and membrane labels on stack 1.

Licence CC BY-NC-SA 3.0; cite doi:10.6084/m9.figshare.856713. 4.6 x 4.6 nm pixels, ~50 nm sections.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from custom.data.readers import read_label, read_volume

from ._fetch import fetch_registered

NAME = "drosophila_vnc"
COMMIT = "4a5f051466d24d8dc1e855ab55658bb1b1dcd6bf"
URL = f"https://raw.githubusercontent.com/unidesigner/groundtruth-drosophila-vnc/{COMMIT}/"
SPACING_NM = (50.0, 4.6, 4.6)
CITATION = "Gerhard S, Funke J, Martel J, Cardona A, Fetter R. Segmented anisotropic ssTEM dataset of neural tissue. figshare 2013."
MITO_THRESHOLD = 127  # anti-aliased 0..255 masks


def get_drosophila_vnc_paths(root: str | os.PathLike, download: bool = False) -> dict[str, Path]:
    """Folders of the VNC data under ``root/drosophila_vnc`` (downloading them if asked)."""
    folder = fetch_registered(NAME, URL, root, download)
    return {
        "stack1_raw": folder / "stack1" / "raw",
        "stack1_mitochondria": folder / "stack1" / "mitochondria",
        "stack1_membranes": folder / "stack1" / "membranes",
        "stack2_raw": folder / "stack2" / "raw",
    }


def load_drosophila_vnc(
    root: str | os.PathLike, target: str = "mitochondria", download: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Stack 1 as (image, binary label, spacing); ``target`` is "mitochondria" or "membranes"."""
    paths = get_drosophila_vnc_paths(root, download)
    image, _ = read_volume(paths["stack1_raw"])
    threshold = MITO_THRESHOLD if target == "mitochondria" else None
    label, _ = read_label(paths[f"stack1_{target}"], threshold=threshold)
    return image, label, SPACING_NM


def load_drosophila_vnc_stack2(root: str | os.PathLike, download: bool = False) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The unlabelled stack 2 (20 sections) as (image, spacing)."""
    image, _ = read_volume(get_drosophila_vnc_paths(root, download)["stack2_raw"])
    return image, SPACING_NM
