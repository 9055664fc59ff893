"""Synthetic fluorescence-like nuclei with touching neighbours: the nuclei bundle's embedded default.

Bright textured ellipses on a dark background, blurred and noisy, packed so that many touch — the
case where connected components merge nuclei and a distance-map watershed should separate them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from .instance_data import Sample, write_instance_dataset


def synthesize_nuclei(size: int = 128, n_nuclei: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size) image in [0, 1] (float32) and its int32 instance labels (0 = background)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    labels = np.zeros((size, size), np.int32)
    image = np.full((size, size), 0.1, np.float32)
    centres: list[tuple[float, float, float]] = []
    for _ in range(n_nuclei * 20):
        if len(centres) == n_nuclei:
            break
        r = rng.uniform(6, 12)
        c = rng.uniform(r, size - r, 2)
        # touching is allowed (gap down to 0.75 of the radii sum), full overlap is not
        if all(np.hypot(*(c - (cy, cx))) > 0.75 * (r + cr) for cy, cx, cr in centres):
            centres.append((c[0], c[1], r))
    for index, (cy, cx, r) in enumerate(centres, start=1):
        a, b, theta = r * rng.uniform(1.0, 1.3), r * rng.uniform(0.75, 1.0), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        inside = ((u / a) ** 2 + (v / b) ** 2 <= 1) & (labels == 0)
        labels[inside] = index
        image[inside] = rng.uniform(0.5, 0.95)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 1.5).astype(np.float32)
    image = ndimage.gaussian_filter(image + 0.08 * texture * (labels > 0), 1.2)
    image = np.clip(image + rng.normal(0, 0.04, image.shape), 0, 1).astype(np.float32)
    return image, labels


def ensure_synthetic_nuclei(root: str | os.PathLike, n_train: int = 12, n_val: int = 3, n_test: int = 5, size: int = 128, seed: int = 0) -> str:
    """Create (once) a synthetic nuclei dataset in the ``custom.data.instance_data`` layout; return its folder."""
    root = Path(root)
    if (root / "datalist.json").exists():
        return str(root)
    counts = {"training": n_train, "validation": n_val, "test": n_test}
    splits: dict[str, list[Sample]] = {}
    offset = seed * 1000
    for split, count in counts.items():
        splits[split] = [(f"{split}_{i:03d}", *synthesize_nuclei(size, seed=offset + i)) for i in range(count)]
        offset += count
    write_instance_dataset(root, splits, name="synthetic_nuclei")
    return str(root)
