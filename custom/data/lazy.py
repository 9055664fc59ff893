"""Opening EM volumes without loading them: blocks are read on demand (zarr, TIFF, sections, NIfTI).

``open_volume`` returns a ``LazyVolume`` whose ``read(slices)`` loads only the requested (Z, Y, X)
box: zarr arrays directly, TIFF stacks through tifffile's zarr view (one page per section), folders
of sections one file per section, NIfTI through nibabel's array proxy (memory-mapped when
uncompressed). Other formats (MHA/NRRD) are read whole by ``read_volume``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .readers import (
    NIFTI_SUFFIXES,
    EMDataError,
    Spacing,
    _read_section,
    _suffix,
    _tiff_spacing,
    check_volume,
    is_zarr,
    nifti_unit_scale,
    read_volume,
    section_files,
)


class _SectionFolder:
    """A folder of equally sized 2D sections, read one file per requested section."""

    def __init__(self, folder: Path) -> None:
        self.files = section_files(folder)
        if not self.files:
            raise EMDataError(f"{folder}: folder holds no TIFF/PNG sections (expected one 2D image per section).")
        first = _read_section(self.files[0], None)
        self.shape = (len(self.files), *first.shape)
        self.dtype = first.dtype

    def __getitem__(self, index: tuple[slice, slice, slice]) -> np.ndarray:
        z, y, x = index
        sections = []
        for path in self.files[z]:
            section = _read_section(path, None)
            if section.shape != self.shape[1:]:
                raise EMDataError(f"{path}: section shape {section.shape} differs from the first section's {self.shape[1:]}.")
            sections.append(section[y, x])
        return np.stack(sections)


class _ReversedAxes:
    """(Z, Y, X) view of an (X, Y, Z) array proxy (NIfTI stores x fastest)."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self.shape = tuple(reversed(proxy.shape[:3]))
        self.dtype = np.dtype(proxy.dtype)

    def __getitem__(self, index: tuple[slice, slice, slice]) -> np.ndarray:
        return np.asarray(self.proxy[tuple(reversed(index))]).T


@dataclass
class LazyVolume:
    """A (Z, Y, X) volume on disk: ``shape``, ``dtype``, ``spacing`` (nm, or None) and ``read``."""

    path: Path
    array: Any
    spacing: Spacing | None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def read(self, index: Sequence[slice]) -> np.ndarray:
        """Load the (Z, Y, X) box ``index`` (a tuple of three slices) into memory.

        A file that opened but cannot deliver these voxels (truncated, corrupt chunk) raises
        ``EMDataError`` naming it, not the storage library's error.
        """
        try:
            return np.asarray(self.array[tuple(index)])
        except EMDataError:
            raise
        except Exception as err:  # tifffile, zarr, nibabel and numcodecs raise many types here
            box = tuple((s.start, s.stop) for s in index)
            raise EMDataError(f"{self.path}: cannot read the voxels {box} ({type(err).__name__}: {err}); the file looks truncated or corrupt.") from err


def _open_nifti(path: Path) -> tuple[Any, Spacing]:
    import nibabel

    try:
        image = nibabel.load(str(path))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise EMDataError(f"{path}: cannot be read as NIfTI ({type(err).__name__}: {err}).") from err
    if len(image.shape) != 3:
        raise EMDataError(f"{path}: expected a 3D (X, Y, Z) NIfTI volume, got shape {image.shape}.")
    scale = nifti_unit_scale(image.header)
    spacing = tuple(round(float(v) * scale, 3) for v in reversed(image.header.get_zooms()[:3]))
    return _ReversedAxes(image.dataobj), spacing  # type: ignore[return-value]


def _open_tiff(path: Path) -> tuple[Any, Spacing | None]:
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            spacing = _tiff_spacing(tif)
        return zarr.open(tifffile.imread(path, aszarr=True), mode="r"), spacing
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as err:
        raise EMDataError(f"{path}: cannot be read as TIFF ({err}).") from err


def open_volume(
    path: str | os.PathLike, spacing: Sequence[float] | None = None, zarr_key: str | None = None
) -> LazyVolume:
    """Open a grey (Z, Y, X) EM volume for block reads; ``spacing`` (nm) overrides the file's.

    Raises ``EMDataError`` naming the file when it is missing, unreadable, not 3D (a 2D image is
    one section) or not numeric.
    """
    path = Path(path)
    if not path.exists():
        raise EMDataError(f"{path}: file not found (expected a TIFF, folder of sections, NIfTI, MHA/NRRD or zarr volume).")
    suffix = _suffix(path)
    file_spacing: Spacing | None = None
    if is_zarr(path):
        array, file_spacing = read_volume(path, lazy=True, zarr_key=zarr_key)
    elif path.is_dir():
        array = _SectionFolder(path)
    elif suffix in (".tif", ".tiff"):
        array, file_spacing = _open_tiff(path)
        if array.ndim != 3 or array.shape[-1] in (3, 4):  # a section or colour: the eager reader checks it
            array, file_spacing = read_volume(path)
    elif suffix in NIFTI_SUFFIXES:
        array, file_spacing = _open_nifti(path)
    else:
        array, file_spacing = read_volume(path)
    if len(array.shape) == 2:
        array = np.asarray(array)[None]
    return LazyVolume(path, array, check_volume(array, path, spacing, file_spacing))
