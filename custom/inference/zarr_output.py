"""The OME-Zarr result of a blockwise segmentation: probability, mask, instances, progress.

Layout (napari and OME-Zarr readers open it with the physical scale)::

    out.zarr/                 multiscales -> "probability" (uint8 = p x 255, or float16)
    out.zarr/labels/mask/0    uint8 {0, 1}
    out.zarr/labels/instances/0  uint32 connected components (optional)

The root ``segmentation`` attribute holds the run's fingerprint (input, model, window, blocks), the
intensity statistics and ``complete``. Each finished block leaves a marker file in
``out.zarr.progress/`` only after its chunks are written, so a killed run resumes with the blocks
that have no marker and no half-written block is ever counted as done. Chunks equal the block cores,
so processes writing different blocks never touch the same chunk.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from custom.data.readers import EMDataError
from custom.data.writers import ome_zarr_attrs

LABELS = ("mask", "instances")


def _label_attrs(spacing: Sequence[float], name: str) -> dict:
    attrs = ome_zarr_attrs(spacing, name)
    attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
    return attrs


class ZarrSegmentation:
    """Create, resume and fill the zarr result of one segmentation run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.progress_dir = self.path.with_name(self.path.name + ".progress")

    # -- creating and reopening ------------------------------------------------------------
    def recorded(self) -> dict | None:
        """The ``segmentation`` attribute of an existing result ({} when it has none), None when absent or not zarr."""
        import zarr

        if not self.path.exists():
            return None
        try:
            return dict(dict(zarr.open_group(str(self.path), mode="r").attrs).get("segmentation", {}))
        except Exception:  # not a zarr group at all: a foreign output
            return None

    def state(self, fingerprint: dict) -> str:
        """'absent', 'complete', 'resumable' (same fingerprint, unfinished) or 'different'."""
        info = self.recorded()
        if info is None:
            return "absent" if not self.path.exists() else "different"
        if info.get("fingerprint") != fingerprint:
            return "different"
        return "complete" if info.get("complete") else "resumable"

    def create(
        self,
        shape: Sequence[int],
        chunks: Sequence[int],
        spacing: Sequence[float],
        prob_dtype: str,
        fingerprint: dict,
        stats: dict,
        instances: bool,
        spacing_note: str | None = None,
    ) -> None:
        """Start a fresh result (removes an old one at the same path); ``spacing_note`` says how a
        spacing that is not the input's own was obtained (recorded beside the fingerprint)."""
        import zarr

        self.remove()
        attrs = ome_zarr_attrs(spacing, "probability")
        attrs["multiscales"][0]["datasets"][0]["path"] = "probability"
        attrs["segmentation"] = {"fingerprint": fingerprint, "stats": stats, "complete": False}
        if spacing_note:
            attrs["segmentation"]["spacing_note"] = spacing_note
        root = zarr.open_group(str(self.path), mode="w")
        root.attrs.update(attrs)
        shape, chunks = tuple(int(s) for s in shape), tuple(int(c) for c in chunks)
        root.create_array("probability", shape=shape, chunks=chunks, dtype=prob_dtype, fill_value=0)
        labels = root.create_group("labels")
        names = LABELS if instances else LABELS[:1]
        labels.attrs["labels"] = list(names)
        for name in names:
            group = labels.create_group(name)
            group.attrs.update(_label_attrs(spacing, name))
            group.create_array("0", shape=shape, chunks=chunks, dtype="uint8" if name == "mask" else "uint32", fill_value=0)
        self.progress_dir.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        """Delete the result and its progress markers."""
        for path in (self.path, self.progress_dir):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def open(self) -> Any:
        import zarr

        return zarr.open_group(str(self.path), mode="r+")

    @property
    def stats(self) -> dict:
        return dict(self.open().attrs["segmentation"]["stats"])

    # -- block bookkeeping -----------------------------------------------------------------
    def finished_blocks(self) -> set[int]:
        """Indices of blocks whose outputs were fully written."""
        if not self.progress_dir.is_dir():
            return set()
        return {int(p.stem) for p in self.progress_dir.glob("*.done")}

    def write_block(self, core: Sequence[slice], index: int, probability: np.ndarray, mask: np.ndarray) -> None:
        """Write one block's core, then mark it finished."""
        root = self.open()
        root["probability"][tuple(core)] = probability
        root["labels/mask/0"][tuple(core)] = mask
        (self.progress_dir / f"{index}.done").touch()

    def mark_complete(self) -> None:
        """Flag the result as complete and drop the progress markers."""
        root = self.open()
        info = dict(root.attrs["segmentation"])
        info["complete"] = True
        root.attrs["segmentation"] = info
        shutil.rmtree(self.progress_dir, ignore_errors=True)


def check_resumable(output: ZarrSegmentation, fingerprint: dict, overwrite: bool) -> bool:
    """Decide what to do with an existing output: True = resume it, False = start fresh.

    Raises ``EMDataError`` when a finished or foreign result exists and ``overwrite`` is False.
    """
    state = output.state(fingerprint)
    if state == "absent" or overwrite:
        return False
    if state == "resumable":
        return True
    if state == "complete":
        what = "a finished segmentation"
    else:
        recorded = (output.recorded() or {}).get("fingerprint") or {}
        changed = sorted(k for k in set(fingerprint) | set(recorded) if fingerprint.get(k) != recorded.get(k))
        what = "an output of another run (different input, model or settings"
        what += f": {', '.join(changed)} changed" if recorded else ""
        what += "; an input changed since an unfinished run cannot be resumed, its statistics and finished blocks are stale)"
    raise EMDataError(f"{output.path}: already holds {what}; pass --overwrite to replace it.")
