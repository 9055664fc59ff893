"""EPFL hippocampus FIB-SEM mitochondria (Lucchi et al. 2012), in the Lucchi++ re-annotation.

165 x 768 x 1024 training and testing volumes, 5 nm isotropic; the source domain of Roels et al.
2019. Downloaded for users as the Lucchi++ archive (folders of PNG sections).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from custom.data.readers import EMDataError, read_label, read_volume

from ._fetch import fetch_archive

NAME = "epfl_hippocampus"
URL = "http://www.casser.io/files/lucchi_pp.zip"
SPACING_NM = (5.0, 5.0, 5.0)
CITATION = "Lucchi A, Li Y, Fua P. Learning for structured prediction using approximate subgradient descent with working sets. CVPR 2013."
SPLIT_FOLDERS = {"train": ("Train_In", "Train_Out"), "test": ("Test_In", "Test_Out")}


def get_epfl_hippocampus_paths(root: str | os.PathLike, split: str = "train", download: bool = False) -> dict[str, Path]:
    """Image and label section folders of one split ("train" or "test")."""
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"split must be one of {sorted(SPLIT_FOLDERS)}, got {split!r}.")
    folder = fetch_archive(URL, None, root, NAME, download)
    image_name, label_name = SPLIT_FOLDERS[split]
    found = {p.name: p for p in folder.rglob("*") if p.is_dir()}
    if image_name not in found or label_name not in found:
        raise EMDataError(f"{folder}: expected folders {image_name}/ and {label_name}/ of PNG sections (Lucchi++ layout).")
    return {"image": found[image_name], "label": found[label_name]}


def load_epfl_hippocampus(
    root: str | os.PathLike, split: str = "train", download: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(image, binary mitochondria label, spacing) of one split."""
    paths = get_epfl_hippocampus_paths(root, split, download)
    image, _ = read_volume(paths["image"])
    label, _ = read_label(paths["label"], threshold=127)
    return image, label, SPACING_NM
