"""Checksum-verified downloads through ``pooch`` with errors that say what to do when offline."""

from __future__ import annotations

import os
from pathlib import Path

import pooch

from custom.data.readers import EMDataError

REGISTRY_DIR = Path(__file__).parent / "registry"


def registry(name: str) -> dict[str, str]:
    """``{relative path: "sha256:<hash>"}`` from ``registry/<name>.txt``."""
    entries = {}
    for line in (REGISTRY_DIR / f"{name}.txt").read_text().splitlines():
        if line.strip():
            path, digest = line.split()
            entries[path] = digest
    return entries


def fetch_registered(name: str, base_url: str, root: str | os.PathLike, download: bool) -> Path:
    """Make sure every file of dataset ``name`` is under ``root/name``; return that folder.

    Files already present and matching their checksum are kept. Missing files are downloaded from
    ``base_url`` when ``download`` is true, otherwise ``EMDataError`` lists what is missing.
    """
    folder = Path(root) / name
    files = registry(name)
    missing = [f for f in files if not (folder / f).exists()]
    if missing and not download:
        raise EMDataError(
            f"{folder}: {len(missing)} of {len(files)} files missing (e.g. {missing[0]}); "
            f"run `python scripts/prepare_data.py download --root {root}` or pass download=True."
        )
    corrupt = [f for f in files if f not in missing and not pooch.hashes.hash_matches(str(folder / f), files[f])]
    if corrupt and not download:
        raise EMDataError(
            f"{folder / corrupt[0]}: corrupt or not the expected file (its checksum differs from the registered "
            f"{files[corrupt[0]]}){f'; {len(corrupt) - 1} more like it' if len(corrupt) > 1 else ''}. Replace it with "
            f"the original, or delete it and run `python scripts/prepare_data.py download --root {root}`."
        )
    fetcher = pooch.create(path=folder, base_url=base_url, registry=files, retry_if_failed=2)
    for relative in files:
        try:
            fetcher.fetch(relative)
        except ValueError as err:  # checksum mismatch of the downloaded file
            raise EMDataError(f"{folder / relative}: checksum mismatch ({err}); delete the file and download again.") from err
        except Exception as err:  # network errors come in many types (requests, urllib3, OSError)
            why = f"the local copy {folder / relative} is corrupt, and " if relative in corrupt else ""
            raise EMDataError(
                f"{why}could not download {base_url}{relative} ({type(err).__name__}: {err}). Check the network "
                f"connection or copy the dataset to {folder} by hand."
            ) from err
    return folder


def fetch_archive(url: str, known_hash: str | None, root: str | os.PathLike, name: str, download: bool) -> Path:
    """Download and unzip one archive into ``root/name`` (kept if already unpacked); return that folder."""
    folder = Path(root) / name
    if folder.exists() and any(folder.iterdir()):
        return folder
    if not download:
        raise EMDataError(f"{folder}: not found; pass download=True to fetch {url}.")
    try:
        pooch.retrieve(url, known_hash=known_hash, path=Path(root), processor=pooch.Unzip(extract_dir=name))
    except Exception as err:
        raise EMDataError(f"could not download {url} ({type(err).__name__}: {err}); fetch it by hand into {folder}.") from err
    return folder
