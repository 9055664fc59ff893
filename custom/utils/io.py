"""Atomic output files: write under a temporary name, rename when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
    reader never sees a half-written result.
    """
    final = check_output_path(path, overwrite=overwrite)
    tmp_dir = tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp = Path(tmp_dir) / final.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"Nothing was written to the temporary output {tmp}.")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
