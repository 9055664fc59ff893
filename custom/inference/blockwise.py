"""Segmenting a volume block by block: bounded memory, resumable, and shardable over processes.

``segment_volume`` reads each block's region (core + halo, ``blocks.py``), z-scores it with the
*whole-volume* mean and standard deviation (gathered block by block beforehand), runs the
``VolumePredictor`` and writes the block core. Under ``torchrun`` every rank takes blocks
``rank, rank + world, ...``; the intensity statistics are exchanged per block and summed in block
order, so every rank, and a single process, normalise with bit-identical numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from custom.data.lazy import LazyVolume
from custom.data.readers import ZARR_SUFFIXES, EMDataError, _suffix
from custom.data.writers import check_writable_suffix, write_volume
from custom.utils.io import check_distinct_from_inputs, check_output_path

from .blocks import Block, core_shape, sliding_window_blocks
from .instances import check_min_size, label_instances
from .predictor import VolumePredictor
from .zarr_output import ZarrSegmentation, check_resumable

def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def block_moments(volume: LazyVolume, blocks: Sequence[Block], rank: int = 0, world_size: int = 1) -> np.ndarray:
    """(count, mean, M2) in float64 for every block core; this rank fills its share, ranks are summed."""
    moments = np.zeros((len(blocks), 3), np.float64)
    for block in blocks[rank::world_size]:
        values = volume.read(block.core).astype(np.float64)
        mean = values.mean()
        moments[block.index] = (values.size, mean, ((values - mean) ** 2).sum())
    if _distributed():
        tensor = torch.from_numpy(moments)
        dist.all_reduce(tensor)  # each row has one non-zero contributor: the sum is exact
        moments = tensor.numpy()
    return moments


def merge_moments(moments: np.ndarray, source: str) -> dict:
    """Whole-volume mean and (population) std from per-block moments, merged in block order."""
    n, mean, m2 = 0.0, 0.0, 0.0
    for count, block_mean, block_m2 in moments:
        total = n + count
        delta = block_mean - mean
        mean += delta * count / total
        m2 += block_m2 + delta**2 * n * count / total
        n = total
    std = float(np.sqrt(m2 / n))
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise EMDataError(f"{source}: the volume contains NaN or Inf values; expected finite intensities.")
    if std == 0:  # the bundle's ValidateVolumed rule: nothing to segment
        raise EMDataError(f"{source}: image is constant ({mean:g}); expected EM intensities.")
    return {"mean": float(mean), "std": std}


PROB_DTYPES = ("uint8", "float16")


def check_prob_dtype(dtype: str) -> str:
    """``dtype`` when it is one of ``PROB_DTYPES``, else ``ValueError`` naming them."""
    if dtype not in PROB_DTYPES:
        raise ValueError(f"prob_dtype must be one of {PROB_DTYPES}, got {dtype!r}.")
    return dtype


def check_block_shape(block_shape: Sequence[int] | int | str) -> tuple[int, int, int]:
    """``block_shape`` as three positive integers (Z, Y, X), or ``ValueError`` saying what was given."""
    values = [block_shape] if isinstance(block_shape, (int, str)) else list(block_shape)
    try:
        shape = tuple(int(v) for v in values)
        ok = len(shape) == 3 and all(v > 0 and float(v) == float(w) for v, w in zip(shape, values))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"block_shape must be three positive integers Z,Y,X (e.g. 16,1024,1024), got {block_shape!r}.")
    return shape  # type: ignore[return-value]


def input_fingerprint(volume: LazyVolume, blocks: Sequence[Block]) -> dict:
    """What identifies the input's content for a resume: file sizes and modification times (a folder's
    files included) and a SHA-256 of the first, middle and last block cores' voxels."""
    path = volume.path
    files = [path] if path.is_file() else [Path(root) / f for root, _, names in os.walk(path) for f in names]
    stats = [f.stat() for f in files]
    digest = hashlib.sha256()
    for index in sorted({0, len(blocks) // 2, len(blocks) - 1}):
        digest.update(np.ascontiguousarray(volume.read(blocks[index].core)).tobytes())
    return {"bytes": sum(s.st_size for s in stats), "mtime_ns": max((s.st_mtime_ns for s in stats), default=0), "sample_sha256": digest.hexdigest()}


def _prefetched(volume: LazyVolume, blocks: Sequence[Block], workers: int) -> Iterator[tuple[Block, np.ndarray]]:
    """Yield (block, region) with up to ``workers`` regions read ahead in threads."""
    if workers <= 0:
        for block in blocks:
            yield block, volume.read(block.region)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque(pool.submit(volume.read, b.region) for b in blocks[:workers])
        for i, block in enumerate(blocks):
            region = pending.popleft().result()  # a finished future is dropped, or it would keep its region alive
            if i + workers < len(blocks):
                pending.append(pool.submit(volume.read, blocks[i + workers].region))
            yield block, region


def quantize_probability(prob: np.ndarray, dtype: str) -> np.ndarray:
    """uint8 (p x 255, rounded) or float16 probability."""
    if check_prob_dtype(dtype) == "uint8":
        return np.rint(prob * 255).astype(np.uint8)
    return prob.astype(np.float16)


def _output_files(output: Path, instances: bool) -> dict[str, Path]:
    """For TIFF/NIfTI outputs: '<stem>_prob<suffix>', '<stem>_mask<suffix>' (and '_instances')."""
    suffix = _suffix(output)
    stem = output.name[: -len(suffix)] if suffix else output.name
    names = ("prob", "mask", "instances") if instances else ("prob", "mask")
    return {name: output.with_name(f"{stem}_{name}{suffix}") for name in names}


def segment_volume(
    volume: LazyVolume,
    predictor: VolumePredictor,
    output: str | Path,
    block_shape: Sequence[int] = (32, 1024, 1024),
    threshold: float = 0.5,
    prob_dtype: str = "uint8",
    instances: bool = False,
    min_size: int = 0,
    overwrite: bool = False,
    num_workers: int = 1,
    model_id: str = "",
    progress: bool = True,
    spacing: Sequence[float] | None = None,
    spacing_note: str | None = None,
) -> dict:
    """Segment ``volume`` block by block into ``output`` and return a summary (blocks, voxels/s, ...).

    ``output`` ending in ``.zarr``: an OME-Zarr result (see ``zarr_output.py``) written block by
    block, resumable, and shared by all ranks of a ``torchrun`` job. ``.tif``/``.nii.gz``: small
    volumes only; ``<stem>_prob``/``_mask``(/``_instances``) files written once at the end. An
    existing output is an error unless ``overwrite`` (an unfinished zarr of the same run is resumed;
    an input changed since, same path or not, is refused). Every option is checked, and an output
    that is, holds or lies inside the input refused, before anything is read or written.
    ``instances`` labels connected components of ``min_size`` voxels or more. ``spacing`` (Z, Y, X nm,
    default: the volume's) is written into the outputs; ``spacing_note`` records how it was obtained
    when it is not the input's own (e.g. assumed), in the zarr's ``segmentation`` attribute.
    """
    start = time.perf_counter()
    output = check_writable_suffix(output)
    block_shape = check_block_shape(block_shape)
    check_prob_dtype(prob_dtype)
    min_size = check_min_size(min_size)
    spacing = spacing or volume.spacing
    if spacing is None:
        raise EMDataError(f"{volume.path}: the input has no spacing metadata; give the spacing (Z, Y, X nm) to record in the outputs.")
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    as_zarr = _suffix(output) in ZARR_SUFFIXES
    files = {} if as_zarr else _output_files(output, instances)
    written = [ZarrSegmentation(output).progress_dir] if as_zarr else list(files.values())
    check_distinct_from_inputs([output, *written], [volume.path])
    try:
        blocks = sliding_window_blocks(volume.shape, predictor.volume_roi, predictor.overlap, block_shape)
    except ValueError as err:
        raise EMDataError(f"{volume.path}: {err}") from err
    if not as_zarr and world > 1:
        raise EMDataError(f"{output}: several processes write only to zarr outputs; use a .zarr path.")
    for path in files.values():
        check_output_path(path, overwrite)
    fingerprint = json.loads(json.dumps({
        "input": str(volume.path.resolve()), "shape": volume.shape, "dtype": str(volume.dtype), "model": model_id,
        "input_content": input_fingerprint(volume, blocks),
        "roi": predictor.volume_roi, "overlap": predictor.overlap, "block_shape": core_shape(blocks),
        "threshold": threshold, "prob_dtype": prob_dtype, "instances": instances, "min_size": min_size if instances else None,
        "resample_zoom": getattr(predictor, "zoom", None),
    }))
    store = ZarrSegmentation(check_output_path(output, overwrite=True)) if as_zarr else None
    resume = check_resumable(store, fingerprint, overwrite) if store else False
    _barrier()
    stats = store.stats if resume else merge_moments(block_moments(volume, blocks, rank, world), str(volume.path))
    if store and not resume and rank == 0:
        chunks = core_shape(blocks)
        store.create(volume.shape, chunks, spacing, prob_dtype, fingerprint, stats, instances, spacing_note)
    _barrier()
    done = store.finished_blocks() if store else set()
    todo = [b for b in blocks[rank::world] if b.index not in done]
    memory = None if store else {"prob": np.zeros(volume.shape, prob_dtype), "mask": np.zeros(volume.shape, np.uint8)}
    mean, std = np.float32(stats["mean"]), np.float32(stats["std"])
    voxels = 0
    bar = tqdm(total=len(todo), desc=f"segment (rank {rank})" if world > 1 else "segment", unit="block", disable=not progress or rank != 0)
    for block, region in _prefetched(volume, todo, num_workers):
        prob = predictor((region.astype(np.float32) - mean) / std)[block.core_in_region]
        prob_q, mask = quantize_probability(prob, prob_dtype), (prob > threshold).astype(np.uint8)
        if store:
            store.write_block(block.core, block.index, prob_q, mask)
        else:
            memory["prob"][block.core], memory["mask"][block.core] = prob_q, mask
        voxels += mask.size
        bar.update()
        bar.set_postfix(vox_per_s=f"{voxels / (time.perf_counter() - start):.3g}")
    bar.close()
    _barrier()
    n_instances = n_removed = None
    if rank == 0:
        cores = [b.core for b in blocks]
        if store:
            root = store.open()
            if instances:
                n_instances, n_removed = label_instances(root["labels/mask/0"], root["labels/instances/0"], cores, min_size)
            store.mark_complete()
        else:
            if instances:
                memory["instances"] = np.zeros(volume.shape, np.uint32)
                n_instances, n_removed = label_instances(memory["mask"], memory["instances"], cores, min_size)
            for name, path in files.items():
                write_volume(path, memory[name], spacing, overwrite=overwrite)
    _barrier()
    seconds = time.perf_counter() - start
    return {
        "blocks": len(blocks), "processed": len(todo), "skipped": len(blocks[rank::world]) - len(todo), "voxels": voxels,
        "seconds": seconds, "voxels_per_s": voxels / seconds if seconds > 0 else 0.0, "instances": n_instances,
        "instances_below_min_size": n_removed, "spacing": list(spacing), "stats": stats,
    }
