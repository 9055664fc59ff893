"""Connected-component instances of a mask too large for memory, labelled block by block.

Each block core is labelled on its own (``cc3d``, 6-connectivity) with labels offset to be unique,
components touching across a block face are joined (a sparse graph's connected components, scipy),
and a final pass rewrites every block with consecutive global labels, dropping objects of fewer than
``min_size`` voxels (sizes are summed over blocks, so an object cut by block faces counts whole).
The result equals labelling the whole mask at once and then dropping the small objects
(``cc3d.dust``), up to a permutation of label ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cc3d
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def _face_pairs(labels: Any, core: Sequence[slice], shape: Sequence[int]) -> list[np.ndarray]:
    """Label pairs facing each other across the block's upper faces (z, y, x)."""
    pairs = []
    for axis, s in enumerate(core):
        if s.stop >= shape[axis]:
            continue
        below, above = list(core), list(core)
        below[axis], above[axis] = slice(s.stop - 1, s.stop), slice(s.stop, s.stop + 1)
        a, b = np.asarray(labels[tuple(below)]).ravel(), np.asarray(labels[tuple(above)]).ravel()
        touching = (a > 0) & (b > 0)
        if touching.any():
            pairs.append(np.unique(np.stack([a[touching], b[touching]], 1), axis=0))
    return pairs


def check_min_size(min_size: int | float) -> int:
    """``min_size`` as a non-negative whole number of voxels, else ``ValueError``."""
    if isinstance(min_size, bool) or not isinstance(min_size, (int, float)) or min_size < 0 or int(min_size) != min_size:
        raise ValueError(f"min_size must be a non-negative whole number of voxels, got {min_size!r}.")
    return int(min_size)


def label_instances(mask: Any, labels: Any, cores: Sequence[Sequence[slice]], min_size: int = 0) -> tuple[int, int]:
    """Write connected components of ``mask`` of at least ``min_size`` voxels into ``labels`` (uint32), block by block.

    ``mask`` and ``labels`` are (Z, Y, X) arrays supporting slice reads and writes (numpy or zarr);
    ``cores`` are disjoint boxes covering the volume on a regular grid. Returns (instances kept,
    objects removed as smaller than ``min_size``).
    """
    min_size = check_min_size(min_size)
    shape = tuple(mask.shape)
    offset, block_sizes = 0, []
    for core in cores:
        local, count = cc3d.connected_components(np.asarray(mask[tuple(core)]) > 0, connectivity=6, return_N=True, out_dtype=np.uint32)
        block_sizes.append(np.bincount(local.ravel(), minlength=count + 1)[1:])
        local[local > 0] += np.uint32(offset)
        labels[tuple(core)] = local
        offset += int(count)
    if offset == 0:
        return 0, 0
    edges = [p for core in cores for p in _face_pairs(labels, core, shape)]
    edges = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(offset + 1, offset + 1))
    count, component = connected_components(graph, directed=False)
    sizes = np.bincount(component[1:], weights=np.concatenate(block_sizes), minlength=count)
    # kept component ids in order of first appearance over labels 1..offset, numbered from 1; 0 stays 0
    ids, first = np.unique(component[1:], return_index=True)
    kept = sizes[ids] >= min_size
    order = np.argsort(first[kept])
    rank = np.zeros(count, np.uint32)
    rank[ids[kept][order]] = np.arange(1, len(order) + 1, dtype=np.uint32)
    mapping = np.zeros(offset + 1, np.uint32)
    mapping[1:] = rank[component[1:]]
    for core in cores:
        labels[tuple(core)] = mapping[np.asarray(labels[tuple(core)])]
    return len(order), int((~kept).sum())
