"""2D instance-segmentation datasets in one layout: images, instance labels and a datalist.

``root/images/<id>.tif`` (float32 grey, (Y, X)), ``root/labels/<id>.tif`` (uint16 instance ids,
0 = background) and ``root/datalist.json`` with ``training``, ``validation`` and ``test`` lists.
Built from the synthetic nuclei, the DSB 2018 nuclei, or EM mitochondria masks (connected
components as instances); read by the ``nuclei_instances`` bundle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import tifffile
from skimage.measure import label as connected_label
from skimage.transform import rescale

from custom.utils.io import atomic_path

from .readers import EMDataError

Sample = tuple[str, np.ndarray, np.ndarray]  # (id, image (Y, X), instance labels (Y, X))
INSTANCE_SPLITS = ("training", "validation", "test")


def _write_tiff(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tifffile.imwrite(tmp, array, photometric="minisblack")


def write_instance_dataset(root: str | os.PathLike, splits: Mapping[str, Iterable[Sample]], name: str) -> Path:
    """Write every split's samples and ``datalist.json`` (written last, so its presence means complete)."""
    root = Path(root)
    unknown = set(splits) - set(INSTANCE_SPLITS)
    if unknown:
        raise EMDataError(f"unknown split(s) {sorted(unknown)}; expected {INSTANCE_SPLITS}.")
    datalist: dict = {"name": name}
    for split, samples in splits.items():
        entries = []
        for sample_id, image, labels in samples:
            if image.shape != labels.shape or image.ndim != 2:
                raise EMDataError(f"{name}/{sample_id}: image {image.shape} and labels {labels.shape} must be equal 2D shapes.")
            if labels.max() > np.iinfo(np.uint16).max:
                raise EMDataError(f"{name}/{sample_id}: {labels.max()} instances do not fit uint16 labels.")
            _write_tiff(root / "images" / f"{sample_id}.tif", image.astype(np.float32))
            _write_tiff(root / "labels" / f"{sample_id}.tif", labels.astype(np.uint16))
            entries.append({"image": f"images/{sample_id}.tif", "label": f"labels/{sample_id}.tif"})
        datalist[split] = entries
    with atomic_path(root / "datalist.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(datalist, indent=1))
    return root


def zscore(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 with zero mean and unit standard deviation (a flat image stays finite)."""
    image = np.asarray(image, np.float32)
    return (image - image.mean()) / max(float(image.std()), 1e-6)


def mask_to_instances(mask: np.ndarray) -> np.ndarray:
    """Instance labels of a binary 2D mask: its 8-connected components (ground truth for mitochondria)."""
    return connected_label(np.asarray(mask) > 0, connectivity=2).astype(np.int32)


def em_instance_samples(image: np.ndarray, mask: np.ndarray, prefix: str, scale: float = 1.0) -> list[Sample]:
    """One sample per section of an EM volume: z-scored section, connected components of its mask.

    ``scale`` < 1 downsamples in-plane (linear for the image, nearest for the mask) before labelling.
    """
    samples = []
    for z, (section, section_mask) in enumerate(zip(image, mask)):
        section = section.astype(np.float32)
        if scale != 1.0:
            section = rescale(section, scale, order=1, preserve_range=True, anti_aliasing=True).astype(np.float32)
            section_mask = rescale(section_mask > 0, scale, order=0, preserve_range=True, anti_aliasing=False)
        samples.append((f"{prefix}_{z:03d}", zscore(section), mask_to_instances(section_mask)))
    return samples
