"""The prepared-dataset layout and its MONAI-style datalist.

A domain folder ``<name>/`` holds the whole volume (``<name>.tif``, ``<name>_label.tif`` when
labelled) and crops along x for each split in ``SPLITS`` (``<name>_<split>[_label].tif``). A direction folder holds ``datalist.json`` with paths relative to
itself:

- ``training`` / ``validation``: labelled source regions (model selection never sees the target);
- ``target_training``: the target region usable for adaptation (and its labels, for the oracle and
  semi-supervised methods) — first 67 % along x, as in Roels et al. 2019;
- ``target_test``: the last 33 % along x, for evaluation only;
- ``target_volumes``: whole target volumes to segment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import load_decathlon_datalist

from custom.utils.io import atomic_path

from .readers import EMDataError
from .writers import write_volume

SPLITS: dict[str, tuple[float, float]] = {
    "source_train": (0.0, 0.8),
    "source_val": (0.8, 1.0),
    "target_train": (0.0, 0.67),
    "target_test": (0.67, 1.0),
}


def crop_along_x(array: np.ndarray, start: float, stop: float) -> np.ndarray:
    """The part of a (Z, Y, X) array between fractions ``start`` and ``stop`` of its x extent."""
    width = array.shape[-1]
    return array[..., int(round(start * width)) : int(round(stop * width))]


def check_pair(image: np.ndarray, label: np.ndarray | None, name: str) -> None:
    """Refuse image/label pairs whose shapes differ or whose label holds no foreground."""
    if label is None:
        return
    if image.shape != label.shape:
        raise EMDataError(f"{name}: image shape {image.shape} and label shape {label.shape} differ; expected equal (Z, Y, X).")
    if not np.any(label):
        raise EMDataError(f"{name}: the label volume is empty (no foreground voxel); expected a binary mask with objects.")


def write_domain(
    folder: str | os.PathLike,
    image: np.ndarray,
    label: np.ndarray | None,
    spacing: Sequence[float],
    overwrite: bool = False,
) -> Path:
    """Write one domain (whole volume and every split region) into ``folder`` as TIFF with spacing."""
    folder = Path(folder)
    check_pair(image, label, str(folder))
    write_volume(_volume_path(folder, None, False), image, spacing, overwrite=overwrite)
    if label is not None:
        write_volume(_volume_path(folder, None, True), label.astype(np.uint8), spacing, overwrite=overwrite)
    for split, (start, stop) in SPLITS.items():
        write_volume(_volume_path(folder, split, False), crop_along_x(image, start, stop), spacing, overwrite=overwrite)
        if label is not None:
            label_crop = crop_along_x(label, start, stop).astype(np.uint8)
            write_volume(_volume_path(folder, split, True), label_crop, spacing, overwrite=overwrite)
    return folder


def _volume_path(domain: Path, split: str | None, label: bool) -> Path:
    """``<domain>/<domain>[_<split>][_label].tif``: names that stay unique once copied elsewhere."""
    return domain / f"{domain.name}{'_' + split if split else ''}{'_label' if label else ''}.tif"


def _entry(domain: Path, split: str | None, base: Path, with_label: bool) -> dict:
    entry = {"image": os.path.relpath(_volume_path(domain, split, False), base)}
    if with_label:
        entry["label"] = os.path.relpath(_volume_path(domain, split, True), base)
    return entry


def write_direction_datalist(
    out_dir: str | os.PathLike,
    source: str | os.PathLike | None,
    target: str | os.PathLike,
    name: str,
    extra_target_volumes: Sequence[str | os.PathLike] = (),
    overwrite: bool = True,
) -> Path:
    """Write ``out_dir/datalist.json`` for adapting the labelled ``source`` domain folder to ``target``
    (``source`` None: a trained model is adapted to ``target`` at test time, so no source lists)."""
    out_dir, target = Path(out_dir), Path(target)
    source = Path(source) if source is not None else None
    if source is not None and not _volume_path(source, None, True).exists():
        raise EMDataError(f"{source}: the source domain needs labels ({_volume_path(source, None, True).name}); found none.")
    target_labelled = _volume_path(target, None, True).exists()
    datalist = {
        "name": name,
        "source": source.name if source is not None else None,
        "target": target.name,
        "splits": {k: list(v) for k, v in SPLITS.items()},
        "training": [_entry(source, "source_train", out_dir, True)] if source is not None else [],
        "validation": [_entry(source, "source_val", out_dir, True)] if source is not None else [],
        "target_training": [_entry(target, "target_train", out_dir, target_labelled)],
        "target_test": [_entry(target, "target_test", out_dir, True)] if target_labelled else [],
        "target_volumes": [_entry(target, None, out_dir, target_labelled)]
        + [{"image": os.path.relpath(Path(p), out_dir)} for p in extra_target_volumes],
    }
    with atomic_path(out_dir / "datalist.json", overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(datalist, indent=2))
    return out_dir / "datalist.json"


EMPTY_LIST_HINTS = {
    "target_test": "there is nothing to evaluate (an unlabelled target has no labelled test region); segment it with inference.json instead",
    "training": "training needs at least one labelled source volume",
    "validation": "validation needs at least one labelled source volume",
    "target_training": "adaptation needs at least one target volume",
}


def load_datalist(dataset_dir: str | os.PathLike, key: str = "training", required: bool = False) -> list[dict]:
    """Entries of ``dataset_dir/datalist.json`` under ``key`` with absolute paths.

    Raises ``EMDataError`` when the datalist or any file it names is missing, or, with ``required``,
    when the list is empty (saying what the run needed it for).
    """
    path = Path(dataset_dir) / "datalist.json"
    if not path.exists():
        raise EMDataError(
            f"{path}: no datalist. Prepare one with `python scripts/prepare_data.py from_dir ...` "
            "or leave dataset_dir empty to use the synthetic default."
        )
    if key not in json.loads(path.read_text()):
        raise EMDataError(f"{path}: has no '{key}' list.")
    entries = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=key, base_dir=str(path.parent))
    for entry in entries:
        for field in ("image", "label"):
            if field in entry and not Path(entry[field]).exists():
                raise EMDataError(f"{path}: '{key}' names {entry[field]}, which does not exist.")
    if required and not entries:
        raise EMDataError(f"{path}: the '{key}' list is empty; {EMPTY_LIST_HINTS.get(key, 'this run needs at least one entry there')}.")
    return entries


def datalist_spacing(dataset_dir: str | os.PathLike, key: str = "training") -> tuple[float, float, float]:
    """(z, y, x) spacing in nm of the first volume listed under ``key`` (read from its header only)."""
    from .lazy import open_volume

    entries = load_datalist(dataset_dir, key, required=True)
    spacing = open_volume(entries[0]["image"]).spacing
    if spacing is None:
        raise EMDataError(f"{entries[0]['image']}: no spacing metadata, so the 3D network cannot be shaped by the voxel size; prepare the data with its spacing.")
    return tuple(float(s) for s in spacing)
