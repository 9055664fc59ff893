"""Writing predicted probability maps and masks with their spacing, atomically."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.transforms import MapTransform

from custom.data.readers import EMDataError
from custom.data.writers import write_volume
from custom.utils.io import check_distinct_from_inputs

logger = logging.getLogger(__name__)


INPUT_SUFFIXES = (".nii.gz", ".tiff", ".tif", ".nii", ".png", ".zarr", ".mha", ".nrrd")


def path_stem(path: str | os.PathLike) -> str:
    """A file's name without its image suffix (``a/vol.ome.zarr`` -> ``vol.ome``, ``b/vol.nii.gz`` -> ``vol``)."""
    stem = Path(str(path)).name
    for suffix in INPUT_SUFFIXES:
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
    return stem


def input_stem(meta: Mapping) -> str:
    """The input file's name without its image suffix, from MONAI metadata."""
    return path_stem(meta["filename_or_obj"])


def input_datalist(input_files: Sequence[str | os.PathLike]) -> list[dict]:
    """``[{'image': path}, ...]`` for ``--input_files``, refusing a single string (it would be read letter by letter)."""
    if isinstance(input_files, (str, os.PathLike)):
        raise EMDataError(f"input_files must be a list of paths, e.g. --input_files \"['{input_files}']\", got the string {str(input_files)!r}.")
    return [{"image": str(f)} for f in input_files]


def check_prediction_outputs(
    datalist: Sequence[Mapping], output_dir: str | os.PathLike, formats: Sequence[str], kinds: Sequence[str] = ("prob", "mask")
) -> None:
    """Before any inference: refuse inputs whose outputs would share a name (``a/vol.tif`` and ``b/vol.tif``
    both give ``vol_mask.tif``) or overwrite an input (the output folder inside an input, or an input
    named like an output)."""
    images = [str(d["image"]) for d in datalist]
    by_stem: dict[str, list[str]] = {}
    for image in images:
        by_stem.setdefault(path_stem(image), []).append(image)
    clashes = {stem: files for stem, files in by_stem.items() if len(files) > 1}
    if clashes:
        stem, files = next(iter(clashes.items()))
        raise EMDataError(
            f"inputs {files} share the name '{stem}': their outputs ({stem}_mask.* ...) in {output_dir} would overwrite "
            "each other. Rename one, or segment them in separate runs with different --output_dir."
        )
    outputs = [Path(output_dir) / f"{path_stem(i)}_{kind}.{fmt}" for i in images for kind in kinds for fmt in formats]
    check_distinct_from_inputs(outputs, images)


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """(z, y, x) spacing from a reader affine (column norms of its 3x3 part)."""
    affine = np.asarray(affine, dtype=float)
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(0)))  # type: ignore[return-value]


class SaveVolumePredictiond(MapTransform):
    """Save a (C, Z, Y, X) softmax prediction as a foreground probability map and a binary mask.

    Writes ``<output_dir>/<input stem>_prob.<fmt>`` (uint8 = probability x 255, or float32) and
    ``<input stem>_mask.<fmt>`` (uint8 0/1) for each format in ``formats`` (``tif``, ``nii.gz``,
    ``zarr``), with the spacing of the input grid. Existing outputs are kept unless ``overwrite``.
    """

    def __init__(
        self,
        keys: str = "pred",
        output_dir: str = "prediction",
        formats: Sequence[str] = ("tif", "nii.gz"),
        threshold: float = 0.5,
        prob_dtype: str = "uint8",
        overwrite: bool = True,
        channel: int = 1,
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.formats = tuple(formats)
        self.threshold = threshold
        self.prob_dtype = prob_dtype
        self.overwrite = overwrite
        self.channel = channel

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            meta = pred.meta
            stem = input_stem(meta)
            prob = np.asarray(pred.detach().cpu().float())[self.channel]
            spacing = affine_spacing(meta["affine"])
            prob_out = (prob * 255).round().astype(np.uint8) if self.prob_dtype == "uint8" else prob.astype(np.float32)
            mask = (prob > self.threshold).astype(np.uint8)
            for fmt in self.formats:
                write_volume(self.output_dir / f"{stem}_prob.{fmt}", prob_out, spacing, overwrite=self.overwrite)
                write_volume(self.output_dir / f"{stem}_mask.{fmt}", mask, spacing, overwrite=self.overwrite)
            logger.info("wrote %s", ", ".join(str(self.output_dir / f"{stem}_{kind}.{fmt}") for fmt in self.formats for kind in ("prob", "mask")))
        return d


class SaveInstancesd(MapTransform):
    """Save (1, Y, X) instance labels as ``<output_dir>/<input stem>_instances.tif`` (uint16, atomic).

    2D instance maps are written on the input's pixel grid (unit spacing); existing files are kept
    unless ``overwrite``.
    """

    def __init__(self, keys: str = "pred", output_dir: str = "prediction", overwrite: bool = True) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = np.asarray(d[key].detach().cpu())
            if labels.max() > np.iinfo(np.uint16).max:
                raise ValueError(f"{input_stem(d[key].meta)}: {labels.max()} instances do not fit uint16.")
            path = self.output_dir / f"{input_stem(d[key].meta)}_instances.tif"
            write_volume(path, labels.astype(np.uint16).reshape(1, *labels.shape[-2:]), (1.0, 1.0, 1.0), overwrite=self.overwrite)
        return d
