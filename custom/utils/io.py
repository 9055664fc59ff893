"""Atomic output files: write under a temporary name, rename when complete."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


class OutputOverlapsInputError(FileExistsError):
    """An output path that is, contains or lies inside an input: writing it would destroy the input."""


def _overlap(a: Path, b: Path) -> str | None:
    """How ``a`` (an output) relates to ``b`` (an input): 'is', 'contains', 'lies inside' or None."""
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "lies inside"
    return None


def check_distinct_from_inputs(outputs: str | os.PathLike | Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse outputs that are, contain or lie inside an input, whatever ``--overwrite`` says.

    Paths are compared after resolving symbolic links and ``..``, so ``out/../in.zarr`` and a link to
    the input are caught too. Call it before anything is written or deleted.
    """
    outputs = [outputs] if isinstance(outputs, (str, os.PathLike)) else list(outputs)
    for output in outputs:
        out = Path(output).resolve()
        for given in inputs:
            how = _overlap(out, Path(given).resolve())
            if how:
                raise OutputOverlapsInputError(
                    f"the output {output} {how} the input {given}: writing it would destroy the input. "
                    "Choose an output path outside the input (no flag overrides this)."
                )


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Return ``path`` as a Path after checking it may be written.

    Raises ``FileExistsError`` when it exists and ``overwrite`` is false, and ``PermissionError``
    when its folder cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"Output {path} already exists; pass overwrite=True (--overwrite) to replace it.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"Cannot create the output folder {path.parent}: {err}") from err
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"Output folder {path.parent} is not writable.")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and folders (e.g. zarr stores). On error the temporary output is removed, so a
    reader never sees a half-written result; once a write succeeds, temporary folders that a killed
    earlier write of the same path left behind are removed too.
    """
    final = check_output_path(path, overwrite=overwrite)
    tmp_dir = tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp = Path(tmp_dir) / final.name
    started = Path(tmp_dir).stat().st_mtime_ns
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"Nothing was written to the temporary output {tmp}.")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _remove_leftovers(final, started)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _remove_leftovers(final: Path, started: int) -> None:
    """Delete ``.<name>.*.tmp`` folders beside ``final`` created before this write began (killed writes)."""
    for leftover in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        try:
            if leftover.is_dir() and leftover.stat().st_mtime_ns < started:
                shutil.rmtree(leftover, ignore_errors=True)
        except FileNotFoundError:  # removed by another process meanwhile
            pass
