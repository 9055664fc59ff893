"""Readers for EM volumes: every format comes back as a (Z, Y, X) array plus spacing in nm (z, y, x).

Supported: multipage TIFF, a folder of single-page TIFF/PNG sections, a single 2D image, NIfTI
(through MONAI's ``NibabelReader``), MHA/MHD/NRRD (through MONAI's ``ITKReader``) and zarr arrays.
``EMVolumeReader`` exposes the same as a MONAI ``ImageReader`` so bundle configs can use it in
``LoadImaged`` via ``_target_``. Labels are binarised here, and only here (``binarize``).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile
from monai.data import ImageReader
from monai.utils import ensure_tuple

from custom.utils.errors import UserInputError

Spacing = tuple[float, float, float]

SECTION_SUFFIXES = (".tif", ".tiff", ".png")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
ZARR_SUFFIXES = (".zarr", ".ome.zarr")
_UNIT_TO_NM = {"nm": 1.0, "nanometer": 1.0, "um": 1e3, "µm": 1e3, "\\u00B5m": 1e3, "micron": 1e3, "mm": 1e6, "m": 1e9}


class EMDataError(UserInputError):
    """Bad input data: the message names the file and what was expected."""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", ".ome.zarr"):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def is_supported(path: str | os.PathLike) -> bool:
    """True when ``path`` names a format ``read_volume`` understands (a folder counts as sections)."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix in SECTION_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES + ZARR_SUFFIXES:
        return True
    return path.is_dir()


def _as_grey(array: np.ndarray, path: Path, channel: int | None) -> np.ndarray:
    """Reduce an RGB(A) section to one channel; refuse colour images unless a channel is chosen."""
    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] > 4:
        if channel is not None:
            return array[..., channel]
        rgb = array[..., :3]
        if np.all(rgb == rgb[..., :1]):
            return rgb[..., 0]
        raise EMDataError(
            f"{path}: expected a greyscale EM image, got {array.shape[-1]} colour channels with shape {array.shape}; "
            "convert it to greyscale first (scripts/segment.py reads grey volumes only), or in a bundle config pick one "
            "channel with the reader's channel argument (custom.data.EMVolumeReader(channel=<index>))."
        )
    return array


def _tiff_spacing(tif: tifffile.TiffFile) -> Spacing | None:
    """Spacing from ImageJ metadata and the X/Y resolution tags, when the file carries them."""
    page = tif.pages[0]
    xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).strip().lower()
    if xres is None or yres is None or unit not in _UNIT_TO_NM:
        return None
    scale = _UNIT_TO_NM[unit]
    (xn, xd), (yn, yd) = xres.value, yres.value
    if not xn or not yn:
        return None
    sx, sy = xd / xn * scale, yd / yn * scale
    sz = float(meta.get("spacing", sx / scale)) * scale
    return (sz, sy, sx)


def _read_tiff(path: Path, channel: int | None) -> tuple[np.ndarray, Spacing | None]:
    try:
        with tifffile.TiffFile(path) as tif:
            array = tif.asarray()
            spacing = _tiff_spacing(tif)
    except Exception as err:  # tifffile, zlib and imagecodecs raise many types for truncated or corrupt files
        raise EMDataError(f"{path}: cannot be read as TIFF ({type(err).__name__}: {err}).") from err
    if array.ndim == 4 and array.shape[-1] in (3, 4):
        array = np.stack([_as_grey(section, path, channel) for section in array])
    else:
        array = _as_grey(array, path, channel)
    return array, spacing


def _read_section(path: Path, channel: int | None) -> np.ndarray:
    if _suffix(path) in (".tif", ".tiff"):
        array, _ = _read_tiff(path, channel)
        return array
    from skimage.io import imread

    try:
        array = np.asarray(imread(path))
    except (OSError, ValueError) as err:
        raise EMDataError(f"{path}: cannot be read as an image ({err}).") from err
    return _as_grey(array, path, channel)


def section_files(folder: Path) -> list[Path]:
    """The TIFF/PNG sections of ``folder`` in section order: names compared number by number
    (``2.png`` before ``10.png``, as unpadded numbering needs), then as text."""
    def key(path: Path) -> list:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]

    return sorted((p for p in folder.iterdir() if _suffix(p) in SECTION_SUFFIXES), key=key)


def _read_sections(folder: Path, channel: int | None) -> np.ndarray:
    files = section_files(folder)
    if not files:
        raise EMDataError(f"{folder}: folder holds no TIFF/PNG sections (expected one 2D image per section).")
    sections = [_read_section(p, channel) for p in files]
    shapes = {s.shape for s in sections}
    if len(shapes) != 1:
        raise EMDataError(f"{folder}: sections differ in shape {sorted(shapes)}; expected one (Y, X) shape.")
    return np.stack(sections)


def nifti_unit_scale(header) -> float:
    """Factor from a NIfTI header's spatial unit to nm (1 when the unit is unknown)."""
    return {"meter": 1e9, "mm": 1e6, "micron": 1e3}.get(header.get_xyzt_units()[0], 1.0)


def _read_monai(path: Path) -> tuple[np.ndarray, Spacing]:
    """NIfTI / ITK formats through MONAI's readers; arrays come back (X, Y, Z) and are transposed."""
    from monai.data import ITKReader, NibabelReader

    reader = NibabelReader() if _suffix(path) in NIFTI_SUFFIXES else ITKReader(affine_lps_to_ras=False)
    try:
        array, meta = reader.get_data(reader.read(str(path)))
    except Exception as err:  # the backends raise many types; all mean "unreadable"
        raise EMDataError(f"{path}: cannot be read ({type(err).__name__}: {err}).") from err
    array = np.asarray(array)
    pixdim = [float(v) for v in np.asarray(meta.get("pixdim", [1.0] * 4))[1:4]] if "pixdim" in meta else None
    if pixdim is None:
        pixdim = [float(v) for v in np.sqrt((np.asarray(meta["affine"])[:3, :3] ** 2).sum(0))]
    scale = 1.0
    if _suffix(path) in NIFTI_SUFFIXES:
        import nibabel

        scale = nifti_unit_scale(nibabel.load(str(path)).header)
    spacing_xyz = [round(p * scale, 3) for p in pixdim[: array.ndim]]
    array = array.T
    spacing = tuple(reversed(spacing_xyz))
    if len(spacing) == 2:
        spacing = (1.0, *spacing)
    return array, spacing  # type: ignore[return-value]


def _read_zarr(path: Path, key: str | None) -> tuple[np.ndarray, Spacing | None]:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise EMDataError(f"{path}: cannot be opened as zarr ({err}).") from err
    attrs = dict(node.attrs)
    if isinstance(node, zarr.Group):
        key = key or _ome_first_dataset(attrs) or "0"
        if key not in node:
            raise EMDataError(f"{path}: zarr group has no array '{key}'; arrays: {sorted(node.array_keys())}.")
        array = node[key]
    else:
        array = node
    return array, zarr_spacing(attrs)


def _ome_first_dataset(attrs: Mapping) -> str | None:
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return multiscales[0]["datasets"][0]["path"]
    return None


def zarr_spacing(attrs: Mapping) -> Spacing | None:
    """Spacing (nm) from OME-Zarr ``multiscales`` scale transforms or a plain ``spacing`` attribute."""
    if "spacing" in attrs:
        return tuple(float(v) for v in attrs["spacing"])[-3:]  # type: ignore[return-value]
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        return None
    axes = multiscales[0].get("axes", [])
    units = [a.get("unit", "nanometer") for a in axes if isinstance(a, Mapping) and a.get("type") == "space"]
    for transform in multiscales[0]["datasets"][0].get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = transform["scale"][-3:]
            factors = [_UNIT_TO_NM.get(u, 1.0) for u in units[-3:]] or [1.0] * 3
            return tuple(float(s) * f for s, f in zip(scale, factors))  # type: ignore[return-value]
    return None


def check_spacing(spacing: Sequence[float], source: str) -> Spacing:
    """Validate a (z, y, x) spacing in nm: three finite positive numbers."""
    values = tuple(float(v) for v in ensure_tuple(spacing))
    if len(values) == 2:
        values = (1.0, *values)
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise EMDataError(f"{source}: spacing must be three positive numbers (z, y, x) in nm, got {spacing}.")
    return values  # type: ignore[return-value]


def is_zarr(path: Path) -> bool:
    """A zarr store: a .zarr suffix or a folder holding zarr metadata (v2 or v3)."""
    return _suffix(path) in ZARR_SUFFIXES or (path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")))


def check_volume(array, path: Path, spacing: Sequence[float] | None, file_spacing: Sequence[float] | None) -> Spacing | None:
    """Check a (Z, Y, X) numeric array read from ``path``; return its spacing (``spacing`` overrides the file's).

    Raises ``EMDataError`` naming the file for other shapes or non-numeric dtypes.
    """
    if len(array.shape) != 3:
        raise EMDataError(f"{path}: expected a 2D section or a (Z, Y, X) volume, got shape {tuple(array.shape)}.")
    dtype = np.dtype(array.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise EMDataError(f"{path}: expected a numeric image, got dtype {dtype}.")
    chosen = spacing if spacing is not None else file_spacing
    return None if chosen is None else check_spacing(chosen, str(path))


def read_volume(
    path: str | os.PathLike,
    spacing: Sequence[float] | None = None,
    channel: int | None = None,
    lazy: bool = False,
    zarr_key: str | None = None,
) -> tuple[np.ndarray, Spacing | None]:
    """Read an EM volume as a (Z, Y, X) array and its spacing in nm (z, y, x), or None when unknown.

    ``spacing`` overrides what the file says. 2D images come back with Z = 1. ``lazy`` keeps zarr
    arrays on disk (a ``zarr.Array``) instead of loading them. Raises ``EMDataError`` naming the
    file for missing files, unreadable or colour data, or arrays that are not 2D/3D numeric.
    """
    path = Path(path)
    if not path.exists():
        raise EMDataError(f"{path}: file not found (expected a TIFF, PNG folder, NIfTI, MHA/NRRD or zarr volume).")
    suffix = _suffix(path)
    if is_zarr(path):
        array, file_spacing = _read_zarr(path, zarr_key)
        if not lazy:
            array = np.asarray(array[...])
    elif path.is_dir():
        array, file_spacing = _read_sections(path, channel), None
    elif suffix in (".tif", ".tiff"):
        array, file_spacing = _read_tiff(path, channel)
    elif suffix == ".png":
        array, file_spacing = _read_section(path, channel), None
    elif suffix in NIFTI_SUFFIXES + ITK_SUFFIXES:
        array, file_spacing = _read_monai(path)
    else:
        raise EMDataError(
            f"{path}: unsupported format '{suffix}'; expected .tif/.tiff, .png, a folder of sections, "
            ".nii/.nii.gz, .mha/.mhd/.nrrd or .zarr."
        )
    if array.ndim == 2:
        array = array[None] if isinstance(array, np.ndarray) else np.asarray(array)[None]
    return array, check_volume(array, path, spacing, file_spacing)


def binarize(
    label: np.ndarray, value_map: Mapping[int, int] | None = None, threshold: float | None = None
) -> np.ndarray:
    """Turn a label array into uint8 {0, 1}.

    By default any non-zero value is foreground. ``threshold`` makes foreground = value > threshold
    (for anti-aliased masks, e.g. 127). ``value_map`` maps listed values to classes; values absent
    from the map raise ``EMDataError``.
    """
    label = np.asarray(label)
    if value_map:
        out = np.zeros(label.shape, np.uint8)
        known = np.zeros(label.shape, bool)
        for value, cls in value_map.items():
            hit = label == value
            out[hit] = cls
            known |= hit
        if not known.all():
            unknown = np.unique(label[~known])[:10]
            raise EMDataError(f"label has values {unknown.tolist()} not in the value map {dict(value_map)}.")
        return out
    if threshold is not None:
        return (label > threshold).astype(np.uint8)
    return (label != 0).astype(np.uint8)


def read_label(
    path: str | os.PathLike,
    value_map: Mapping[int, int] | None = None,
    threshold: float | None = None,
    channel: int | None = 0,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, Spacing | None]:
    """Read a label volume and binarise it (see ``binarize``); colour masks use ``channel``."""
    array, file_spacing = read_volume(path, spacing=spacing, channel=channel)
    try:
        return binarize(array, value_map, threshold), file_spacing
    except EMDataError as err:
        raise EMDataError(f"{path}: {err}") from err


def spacing_affine(spacing: Sequence[float]) -> np.ndarray:
    """A 4x4 affine whose diagonal is the (z, y, x) spacing: array axis i has spacing[i]."""
    affine = np.eye(4)
    affine[0, 0], affine[1, 1], affine[2, 2] = spacing
    return affine


class EMVolumeReader(ImageReader):
    """MONAI ``ImageReader`` over ``read_volume``/``read_label`` for ``LoadImage(d)``.

    Args:
        spacing: (z, y, x) nm; overrides the file. When neither gives one, spacing is 1 and the
            metadata flag ``spacing_known`` is False (``ResampleToPixelSized`` refuses such data).
        label: binarise the data (``binarize`` with ``value_map``/``threshold``).
        value_map, threshold: see ``binarize``.
        channel: colour channel to use for RGB(A) data.
    """

    def __init__(
        self,
        spacing: Sequence[float] | None = None,
        label: bool = False,
        value_map: Mapping[int, int] | None = None,
        threshold: float | None = None,
        channel: int | None = None,
    ) -> None:
        super().__init__()
        self.spacing = spacing
        self.label = label
        self.value_map = {int(k): int(v) for k, v in value_map.items()} if value_map else None
        self.threshold = threshold
        self.channel = channel

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        return all(is_supported(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs) -> list[tuple]:
        items = []
        for name in ensure_tuple(data):
            if self.label:
                array, spacing = read_label(name, self.value_map, self.threshold, self.channel or 0, self.spacing)
            else:
                array, spacing = read_volume(name, self.spacing, self.channel)
            items.append((str(name), np.asarray(array), spacing))
        return items

    def get_data(self, img: list[tuple] | tuple) -> tuple[np.ndarray, dict]:
        items = img if isinstance(img, list) else [img]
        if len(items) != 1:
            raise EMDataError(f"EMVolumeReader reads one volume per key, got {len(items)}: {[i[0] for i in items]}.")
        name, array, spacing = items[0]
        if spacing is None:
            warnings.warn(f"{name}: spacing unknown; using 1 nm. Pass spacing=(z, y, x) in nm.", stacklevel=2)
        meta = {
            "filename_or_obj": name,
            "affine": spacing_affine(spacing or (1.0, 1.0, 1.0)),
            "original_affine": spacing_affine(spacing or (1.0, 1.0, 1.0)),
            "spatial_shape": np.asarray(array.shape),
            "original_channel_dim": float("nan"),
            "spacing_known": spacing is not None,
        }
        return array, meta
