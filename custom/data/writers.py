"""Write (Z, Y, X) volumes with their spacing (nm) as TIFF, NIfTI or zarr, atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from custom.utils.io import atomic_path

from .readers import NIFTI_SUFFIXES, ZARR_SUFFIXES, EMDataError, _suffix, check_spacing


WRITABLE_SUFFIXES = (".tif", ".tiff", *NIFTI_SUFFIXES, *ZARR_SUFFIXES)


def check_writable_suffix(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or ``EMDataError`` when ``write_volume`` cannot write its format."""
    path = Path(path)
    if _suffix(path) not in WRITABLE_SUFFIXES:
        raise EMDataError(f"{path}: cannot write '{_suffix(path) or path.name}'; use .tif, .nii.gz or .zarr.")
    return path


def ome_zarr_attrs(spacing: Sequence[float], name: str = "volume") -> dict:
    """OME-Zarr (v0.4) ``multiscales`` attributes for one scale level '0' with (z, y, x) spacing in nm."""
    return {
        "multiscales": [
            {
                "version": "0.4",
                "name": name,
                "axes": [{"name": ax, "type": "space", "unit": "nanometer"} for ax in "zyx"],
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(spacing)}]}],
            }
        ]
    }


def _write_tiff(path: Path, array: np.ndarray, spacing: Sequence[float]) -> None:
    if array.dtype not in (np.uint8, np.uint16, np.float32):
        array = array.astype(np.float32)
    sz, sy, sx = spacing
    tifffile.imwrite(
        path,
        array,
        imagej=True,
        resolution=(1.0 / sx, 1.0 / sy),
        metadata={"spacing": sz, "unit": "nm", "axes": "ZYX"},
        compression="zlib",
    )


def _write_nifti(path: Path, array: np.ndarray, spacing: Sequence[float]) -> None:
    import nibabel

    affine = np.diag([spacing[2] / 1e3, spacing[1] / 1e3, spacing[0] / 1e3, 1.0])
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    image = nibabel.Nifti1Image(np.ascontiguousarray(array.T), affine)
    image.header.set_xyzt_units("micron")
    nibabel.save(image, str(path))


def _write_zarr(path: Path, array: np.ndarray, spacing: Sequence[float], chunks: Sequence[int] | None) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w")
    group.attrs.update(ome_zarr_attrs(spacing))
    chunks = tuple(chunks) if chunks else (1, *[min(s, 512) for s in array.shape[1:]])
    group.create_array("0", data=np.asarray(array), chunks=chunks)


def write_volume(
    path: str | os.PathLike,
    array: np.ndarray,
    spacing: Sequence[float],
    overwrite: bool = False,
    chunks: Sequence[int] | None = None,
) -> Path:
    """Write a (Z, Y, X) array with (z, y, x) spacing in nm; the format follows the suffix.

    ``.tif/.tiff`` (ImageJ hyperstack, spacing in the resolution tags), ``.nii/.nii.gz`` (affine in
    µm, units set) or ``.zarr`` (OME-Zarr attributes, so napari shows the physical scale). The file
    appears only when complete; an existing file is kept unless ``overwrite``.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim != 3:
        raise EMDataError(f"{path}: expected a (Z, Y, X) array to write, got shape {array.shape}.")
    spacing = check_spacing(spacing, str(path))
    suffix = _suffix(check_writable_suffix(path))
    with atomic_path(path, overwrite=overwrite) as tmp:
        if suffix in (".tif", ".tiff"):
            _write_tiff(tmp, array, spacing)
        elif suffix in NIFTI_SUFFIXES:
            _write_nifti(tmp, array, spacing)
        else:
            _write_zarr(tmp, array, spacing, chunks)
    return path
