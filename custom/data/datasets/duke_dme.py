"""Duke DME OCT (Chiu et al., Biomed. Opt. Express 6(4), 2015): retinal layers and fluid in B-scans.

Ten subjects, ``Subject_01.mat`` … ``Subject_10.mat``, each a MATLAB file with ``images``
(496 × 768 × 61 B-scans) and, for 11 annotated B-scans per subject, two experts' layer boundaries
(``manualLayers1``/``2``: 8 × 768 × 61 row positions, NaN where not traced) and fluid masks
(``manualFluid1``/``2``: 496 × 768 × 61). Published at
https://people.duke.edu/~sf59/Chiu_BOE_2014_dataset.htm as ``2015_BOE_Chiu.zip``.

``load_duke_dme`` returns the annotated B-scans with a layer label map built from the boundaries:
0 above the first boundary, k between boundary k and k + 1 (k = 1 … 7), 0 below the last, and
``IGNORE`` in columns the expert did not trace.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from custom.data.readers import EMDataError

from ._fetch import fetch_archive

NAME = "duke_dme"
URL = "https://people.duke.edu/~sf59/2015_BOE_Chiu.zip"
PAGE = "https://people.duke.edu/~sf59/Chiu_BOE_2014_dataset.htm"
CITATION = "Chiu SJ et al. Kernel regression based segmentation of optical coherence tomography images with diabetic macular edema. Biomed. Opt. Express 6(4), 2015."
IGNORE = 255
REQUIRED_KEYS = ("images", "manualLayers1", "manualLayers2", "manualFluid1", "manualFluid2")


def get_duke_dme_paths(root: str | os.PathLike, download: bool = False) -> list[Path]:
    """The ``Subject_*.mat`` files under ``root/duke_dme`` (downloading the archive when asked)."""
    folder = fetch_archive(URL, None, root, NAME, download)
    files = sorted(folder.rglob("Subject_*.mat"))
    if not files:
        raise EMDataError(f"{folder}: no Subject_*.mat files; download 2015_BOE_Chiu.zip from {PAGE} and unpack it there.")
    return files


def boundaries_to_labels(boundaries: np.ndarray, height: int) -> np.ndarray:
    """(n_boundaries, W) row positions → (height, W) uint8 layer labels (``IGNORE`` where a column has NaN)."""
    rows = np.arange(height)[:, None]
    labels = np.zeros((height, boundaries.shape[1]), np.uint8)
    for k in range(boundaries.shape[0] - 1):
        upper, lower = boundaries[k], boundaries[k + 1]
        labels[(rows >= upper[None]) & (rows < lower[None])] = k + 1
    labels[:, np.isnan(boundaries).any(0)] = IGNORE
    return labels


def load_duke_dme(path: str | os.PathLike, annotator: int = 1) -> dict[str, np.ndarray]:
    """One subject's annotated B-scans: ``image`` (N, H, W) uint8, ``layers`` (N, H, W) uint8 labels,
    ``fluid`` (N, H, W) uint8 0/1 (NaN → 0), ``index`` (N,) positions in the 61-scan volume."""
    if annotator not in (1, 2):
        raise ValueError(f"annotator must be 1 or 2, got {annotator}.")
    try:
        mat = loadmat(str(path))
    except (OSError, ValueError) as err:
        raise EMDataError(f"{path}: not a readable MATLAB file ({err}).") from err
    missing = [k for k in REQUIRED_KEYS if k not in mat]
    if missing:
        raise EMDataError(f"{path}: missing {missing}; expected a Duke DME subject file with {list(REQUIRED_KEYS)}.")
    images, boundaries = np.asarray(mat["images"]), np.asarray(mat[f"manualLayers{annotator}"], np.float64)
    fluid = np.asarray(mat[f"manualFluid{annotator}"], np.float64)
    if images.ndim != 3 or boundaries.shape[1:] != images.shape[1:] or fluid.shape != images.shape:
        raise EMDataError(
            f"{path}: images {images.shape}, manualLayers{annotator} {boundaries.shape}, manualFluid{annotator} {fluid.shape}; "
            "expected (H, W, N), (8, W, N) and (H, W, N)."
        )
    index = np.flatnonzero(~np.isnan(boundaries).all(axis=(0, 1)))
    return {
        "image": np.moveaxis(images[..., index], -1, 0).astype(np.uint8),
        "layers": np.stack([boundaries_to_labels(boundaries[..., i], images.shape[0]) for i in index]) if len(index) else np.zeros((0, *images.shape[:2]), np.uint8),
        "fluid": np.moveaxis(np.nan_to_num(fluid[..., index]) > 0, -1, 0).astype(np.uint8),
        "index": index,
    }
