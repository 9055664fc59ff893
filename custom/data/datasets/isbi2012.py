"""ISBI 2012 EM segmentation challenge (Cardona et al. 2010; Arganda-Carreras et al. 2015).

30 training sections of 512 x 512 ssTEM (Drosophila first-instar larva VNC, 4 x 4 nm pixels,
50 nm sections) with membrane labels, and 30 unlabelled test sections. Three layouts are read:

- the challenge's own files ``train-volume.tif``, ``train-labels.tif``, ``test-volume.tif``;
- the widely shared PNG copy: ``train/image/<N>.png`` and ``train/label/<N>.png`` (sections in
  numeric order, ``2.png`` before ``10.png``);
- the HDF5 copy that torch-em serves (``isbi.h5``: ``raw`` and ``labels/membranes``), which is what
  ``download=True`` fetches (checksum-verified), since the challenge site no longer serves files.

The challenge labels are 255 = cell, 0 = membrane; ``LABEL_VALUE_MAP`` turns them into our
convention (1 = membrane, 0 = background) here and nowhere else.
Cite: Arganda-Carreras I et al. Crowdsourcing the creation of image segmentation algorithms for
connectomics. Front. Neuroanat. 9:142 (2015), doi:10.3389/fnana.2015.00142.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pooch

from custom.data.readers import EMDataError, binarize, read_volume

NAME = "isbi2012"
URL = "https://oc.embl.de/index.php/s/h0TkwqxU0PJDdMd/download"
SHA256 = "0e10fe909a1243084d91773470856993b7d40126a12e85f0f1345a7a9e512f29"
H5_NAME = "isbi.h5"
TIFF_NAMES = {"train_image": "train-volume.tif", "train_label": "train-labels.tif", "test_image": "test-volume.tif"}
H5_KEYS = {"train_image": "raw", "train_label": "labels/membranes"}
PNG_DIRS = {"train_image": "train/image", "train_label": "train/label"}
SPACING_NM = (50.0, 4.0, 4.0)
LABEL_VALUE_MAP = {0: 1, 255: 0}  # challenge: 0 = membrane, 255 = cell


def get_isbi2012_paths(root: str | os.PathLike, download: bool = False) -> dict[str, Path]:
    """Files under ``root/isbi2012``: the challenge TIFFs present, else the PNG section folders, else ``{"h5": isbi.h5}``.

    Downloads ``isbi.h5`` (checksum-verified) when neither layout is there and ``download`` is set.
    """
    folder = Path(root) / NAME
    tiffs = {key: folder / name for key, name in TIFF_NAMES.items() if (folder / name).exists()}
    if "train_image" in tiffs:
        return tiffs
    if (folder / PNG_DIRS["train_image"]).is_dir():
        return {key: folder / name for key, name in PNG_DIRS.items() if (folder / name).is_dir()}
    if (folder / H5_NAME).exists():
        return {"h5": folder / H5_NAME}
    if not download:
        raise EMDataError(
            f"{folder}: neither {TIFF_NAMES['train_image']} (+ {TIFF_NAMES['train_label']}) nor {H5_NAME} found; "
            f"pass download=True (or `python scripts/prepare_data.py download --datasets isbi2012`)."
        )
    try:
        pooch.retrieve(URL, known_hash=f"sha256:{SHA256}", fname=H5_NAME, path=folder)
    except ValueError as err:
        raise EMDataError(f"{folder / H5_NAME}: checksum mismatch ({err}); delete it and download again.") from err
    except Exception as err:
        raise EMDataError(f"could not download {URL} ({type(err).__name__}: {err}); put {H5_NAME} or the challenge TIFFs in {folder}.") from err
    return {"h5": folder / H5_NAME}


def membrane_label(raw_label: np.ndarray, source: str) -> np.ndarray:
    """Challenge labels (255 cell / 0 membrane) as uint8 with 1 = membrane.

    Other values are refused, and so is a result in which membranes cover most pixels (about 22 %
    in the challenge data): that means the file's polarity is inverted.
    """
    try:
        label = binarize(raw_label, LABEL_VALUE_MAP)
    except EMDataError as err:
        raise EMDataError(f"{source}: {err} ISBI 2012 labels must be 0 (membrane) or 255 (cell).") from err
    if label.mean() > 0.5:
        raise EMDataError(
            f"{source}: {label.mean():.0%} of pixels would be membrane; the labels look inverted "
            "(expected 0 = membrane, 255 = cell)."
        )
    return label


def _read_h5(path: Path, key: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        if key not in f:
            raise EMDataError(f"{path}: no dataset '{key}'; expected {sorted(H5_KEYS.values())}.")
        return f[key][:]


def load_isbi2012(
    root: str | os.PathLike, download: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """The 30 training sections as (uint8 image, uint8 membrane label with 1 = membrane, spacing)."""
    paths = get_isbi2012_paths(root, download)
    if "h5" in paths:
        image = _read_h5(paths["h5"], H5_KEYS["train_image"])
        raw_label = _read_h5(paths["h5"], H5_KEYS["train_label"])
        source = f"{paths['h5']}:{H5_KEYS['train_label']}"
    else:
        if "train_label" not in paths:
            raise EMDataError(f"{paths['train_image'].parent}: the training labels ({TIFF_NAMES['train_label']} or {PNG_DIRS['train_label']}/) are missing beside the images.")
        image, _ = read_volume(paths["train_image"])
        raw_label, _ = read_volume(paths["train_label"])
        source = str(paths["train_label"])
    if image.shape != raw_label.shape:
        raise EMDataError(f"{source}: label shape {raw_label.shape} differs from image shape {image.shape}.")
    return np.asarray(image), membrane_label(raw_label, source), SPACING_NM
