"""Choosing the MONAI sliding-window inferer for a 2D (per-section) or 3D (anisotropic roi) model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer

from .predictor import WindowNetwork, check_rot90_roi


class AugmentedWindowInferer(Inferer):
    """Test-time augmentation inside every window of another inferer.

    The network is wrapped in :class:`WindowNetwork` (logits of the plain window, its flips along
    ``flip_axes`` and, with ``rot90``, its in-plane rotations, averaged) for each call, so the window
    grid and blending stay those of ``inferer``; the same averaging as ``VolumePredictor``.
    """

    def __init__(self, inferer: Inferer, spatial_dims: int, flip_axes: Sequence[int] = (), rot90: bool = False) -> None:
        super().__init__()
        self.inferer, self.spatial_dims = inferer, spatial_dims
        self.flip_axes, self.rot90 = tuple(int(a) for a in flip_axes), rot90

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        augmented = WindowNetwork(network, self.spatial_dims, channels_last=False, flip_axes=self.flip_axes, rot90=self.rot90)
        return self.inferer(inputs, augmented, *args, **kwargs)


def make_volume_inferer(
    spatial_dims: int,
    roi_size: Sequence[int],
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    mode: str = "gaussian",
    sw_device: str | None = None,
    device: str | None = None,
    flip_axes: Sequence[int] | None = (),
    rot90: bool = False,
    progress: bool = False,
) -> Inferer:
    """Sliding-window inferer over (B, C, Z, Y, X) volumes.

    ``spatial_dims`` 2: MONAI ``SliceInferer`` runs the 2D model on every z section with a
    ``roi_size`` (Y, X) window. 3: ``SlidingWindowInferer`` with a (Z, Y, X) roi, e.g. (8, 256, 256)
    for ~10x anisotropic ssTEM. Gaussian blending of overlapping windows by default.
    ``flip_axes`` (window axes, e.g. ``[-2, -1]`` in-plane) and ``rot90`` (in-plane 90° rotations,
    square windows only) add test-time augmentation (:class:`AugmentedWindowInferer`). ``progress``
    shows a bar over the window batches of each volume (MONAI's ``progress``).
    """
    roi = tuple(int(r) for r in roi_size)
    common = {"sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode, "sw_device": sw_device, "device": device, "progress": progress}
    if spatial_dims == 2:
        inferer: Inferer = SliceInferer(spatial_dim=0, roi_size=roi[-2:], **common)
    elif spatial_dims == 3:
        if len(roi) != 3:
            raise ValueError(f"a 3D model needs a (Z, Y, X) roi_size, got {roi}.")
        inferer = SlidingWindowInferer(roi_size=roi, **common)
    else:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    check_rot90_roi(roi, rot90)
    if flip_axes or rot90:
        return AugmentedWindowInferer(inferer, spatial_dims, flip_axes or (), rot90)
    return inferer
