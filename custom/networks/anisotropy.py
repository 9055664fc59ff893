"""U-Net kernels and strides shaped by the voxel size, for anisotropic serial-section EM in 3D."""

from __future__ import annotations

from collections.abc import Sequence

IN_PLANE = ((1, 3, 3), (1, 2, 2))  # kernel, stride of a level whose sections are much thicker than its pixels
ISOTROPIC = ((3, 3, 3), (2, 2, 2))


def anisotropic_layout(spacing_zyx: Sequence[float], levels: int, ratio: float = 2.0) -> dict[str, list[list[int]]]:
    """``kernel_sizes`` (one per level) and ``strides`` (between levels) of a 3D U-Net for voxels of
    ``spacing_zyx`` (nm), by the nnU-Net rule (Isensee et al. 2021): while the z spacing at a level is
    at least ``ratio`` times its in-plane spacing, that level convolves in-plane only ``(1, 3, 3)`` and
    pools ``(1, 2, 2)``, so thick sections are not mixed or pooled away; once it is not, ``(3, 3, 3)``
    and ``(2, 2, 2)``. E.g. 50 nm sections of 10 nm pixels: two in-plane levels, then isotropic ones.
    """
    z, y, x = (float(s) for s in spacing_zyx)
    if min(z, y, x) <= 0 or levels < 2:
        raise ValueError(f"need a positive (z, y, x) spacing and at least 2 levels, got {tuple(spacing_zyx)}, {levels}.")
    kernels, strides = [], []
    for level in range(levels):
        kernel, stride = IN_PLANE if z >= ratio * min(y, x) else ISOTROPIC
        kernels.append(list(kernel))
        if level < levels - 1:
            strides.append(list(stride))
            z, y, x = z * stride[0], y * stride[1], x * stride[2]
    return {"kernel_sizes": kernels, "strides": strides}


def training_spacing(volume_spacing: Sequence[float], pixel_size_nm: float) -> tuple[float, float, float]:
    """The voxel size the network sees: the volume's z spacing (sections are never resampled) and the
    training pixel size in-plane."""
    return float(volume_spacing[0]), float(pixel_size_nm), float(pixel_size_nm)
