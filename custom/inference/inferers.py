"""Choosing the MONAI sliding-window inferer for a 2D (per-section) or 3D (anisotropic roi) model."""

from __future__ import annotations

from collections.abc import Sequence

from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer


def make_volume_inferer(
    spatial_dims: int,
    roi_size: Sequence[int],
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    mode: str = "gaussian",
    sw_device: str | None = None,
    device: str | None = None,
) -> Inferer:
    """Sliding-window inferer over (B, C, Z, Y, X) volumes.

    ``spatial_dims`` 2: MONAI ``SliceInferer`` runs the 2D model on every z section with a
    ``roi_size`` (Y, X) window. 3: ``SlidingWindowInferer`` with a (Z, Y, X) roi, e.g. (8, 256, 256)
    for ~10x anisotropic ssTEM. Gaussian blending of overlapping windows by default.
    """
    roi = tuple(int(r) for r in roi_size)
    common = {"sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode, "sw_device": sw_device, "device": device}
    if spatial_dims == 2:
        return SliceInferer(spatial_dim=0, roi_size=roi[-2:], **common)
    if spatial_dims == 3:
        if len(roi) != 3:
            raise ValueError(f"a 3D model needs a (Z, Y, X) roi_size, got {roi}.")
        return SlidingWindowInferer(roi_size=roi, **common)
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
