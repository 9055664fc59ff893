"""Cutting a volume into blocks whose sliding-window result equals the whole-volume result.

MONAI's sliding window (``dense_patch_slices``) puts windows of size ``r`` at ``0, s, 2s, ...`` along
each axis (``s = int(r * (1 - overlap))``), the last one moved back to end at the volume edge. A
block is a *core* (the voxels it owns and writes) plus a *region* (what is read and run through the
inferer). Choosing the region so that it starts on a window start and ends on a window end makes the
windows MONAI lays over the region exactly the whole-volume windows that touch the core, so the
Gaussian-blended core equals the whole-volume prediction up to float summation order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    """One unit of work: ``core`` is written, ``region`` (core plus halo) is read and predicted."""

    index: int
    core: tuple[slice, ...]
    region: tuple[slice, ...]

    @property
    def core_in_region(self) -> tuple[slice, ...]:
        """Where the core lies inside the predicted region (for cropping the halo)."""
        return tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(self.core, self.region))


def window_stride(length: int, roi: int, overlap: float) -> int:
    """The window step MONAI uses along one axis (``monai.inferers.utils._get_scan_interval``)."""
    if roi == length:
        return roi
    return max(int(roi * (1 - overlap)), 1)


def _floor(value: int, step: int) -> int:
    return (value // step) * step


def _axis_regions(length: int, roi: int, overlap: float, core_size: int) -> list[tuple[slice, slice]]:
    """(core, region) pairs along one axis (``roi <= length``, checked by the caller)."""
    stride = window_stride(length, roi, overlap)
    core_size = length if core_size >= length else max(1, core_size // stride) * stride
    last_start = _floor(length - roi, stride)  # the last window start on the regular grid
    pairs = []
    for c0 in range(0, length, core_size):
        c1 = min(c0 + core_size, length)
        a = min(max(_floor(c0 - roi + stride, stride), 0), last_start)
        b = length if c1 > length - roi else _floor(c1 - 1, stride) + roi
        pairs.append((slice(c0, c1), slice(a, b)))
    return pairs


def sliding_window_blocks(
    shape: Sequence[int], roi_size: Sequence[int], overlap: float, block_shape: Sequence[int]
) -> list[Block]:
    """Blocks covering ``shape`` (Z, Y, X) for a sliding window of ``roi_size`` (Z, Y, X) and ``overlap``.

    For a 2D model pass ``roi_size`` (1, Y, X): sections are independent, so blocks need no z halo.
    ``block_shape`` is the requested core size; an axis shorter than it is one block, otherwise the
    size is rounded down to a multiple of the window stride (at least one stride). An axis shorter
    than the window is one block (the predictor pads it, as MONAI's sliding window does). Blocks are
    ordered z, then y, then x.
    """
    if not (len(shape) == len(roi_size) == len(block_shape)):
        raise ValueError(f"shape {tuple(shape)}, roi_size {tuple(roi_size)} and block_shape {tuple(block_shape)} differ in length.")
    roi_size = [min(int(r), int(n)) for r, n in zip(roi_size, shape)]
    per_axis = [_axis_regions(int(n), int(r), overlap, int(b)) for n, r, b in zip(shape, roi_size, block_shape)]
    blocks = []
    for index, pairs in enumerate(itertools.product(*per_axis)):
        blocks.append(Block(index, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)))
    return blocks


def core_shape(blocks: Sequence[Block]) -> tuple[int, ...]:
    """The core size of the first (largest) block: the natural chunk shape for disjoint writes."""
    return tuple(s.stop - s.start for s in blocks[0].core)
