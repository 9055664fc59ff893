"""A real volume as another microscope might image it: a development target whose content stays real.

The synthetic pair shifts only the imaging; re-imaging a real labelled volume gives a target with
real structures and a known answer (its labels, resampled), to test adaptation and label-free
selection on shifts of pixel size, contrast, blur and noise (``prepare_data.py reimage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Reimaging:
    """The imaging changes, applied in this order: blur, resampling, contrast, gamma, noise.

    Args:
        pixel_size_factor: new in-plane pixel size / old (2: twice as coarse).
        blur_nm: in-plane Gaussian sigma (nm) of the new microscope's point spread, before resampling.
        contrast: intensity scale around the mean (below 1: flatter).
        gamma: intensity exponent on [0, 1] (above 1: darker mid-tones).
        noise: Gaussian noise std as a fraction of the [0, 1] intensity range.
    """

    pixel_size_factor: float = 1.0
    blur_nm: float = 0.0
    contrast: float = 1.0
    gamma: float = 1.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("pixel_size_factor", "contrast", "gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.blur_nm < 0 or self.noise < 0:
            raise ValueError(f"blur_nm and noise must be >= 0, got {self.blur_nm}, {self.noise}.")


def _unit_range(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 on [0, 1] (its 0.1 / 99.9 percentiles)."""
    lo, hi = np.percentile(image, (0.1, 99.9))
    return np.clip((image.astype(np.float32) - lo) / max(float(hi - lo), 1e-6), 0, 1)


def reimage(
    image: np.ndarray, label: np.ndarray | None, spacing: Sequence[float], change: Reimaging, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float]]:
    """(uint8 image, label resampled by nearest neighbour or None, new (z, y, x) spacing) of the
    (Z, Y, X) ``image`` imaged with ``change``; sections stay sections (z is untouched)."""
    x = _unit_range(np.asarray(image))
    if change.blur_nm > 0:
        x = ndimage.gaussian_filter(x, (0, change.blur_nm / spacing[1], change.blur_nm / spacing[2]))
    zoom = (1.0, 1.0 / change.pixel_size_factor, 1.0 / change.pixel_size_factor)
    if change.pixel_size_factor != 1.0:
        x = ndimage.zoom(x, zoom, order=1, prefilter=False, grid_mode=True, mode="grid-constant")
        if label is not None:
            label = ndimage.zoom(np.asarray(label), zoom, order=0, grid_mode=True, mode="grid-constant")
            label = label[:, : x.shape[1], : x.shape[2]]
    mean = float(x.mean())
    x = np.clip(mean + change.contrast * (x - mean), 0, 1) ** change.gamma
    if change.noise > 0:
        x = x + np.random.default_rng(seed).normal(0, change.noise, x.shape).astype(np.float32)
    new_spacing = (float(spacing[0]), float(spacing[1]) * change.pixel_size_factor, float(spacing[2]) * change.pixel_size_factor)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), label, new_spacing
