"""The command line that runs a bundle config through ``python -m monai.bundle run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def bundle_run_command(config_files: Sequence[str | os.PathLike], bundle_root: str | os.PathLike, *args: str) -> list[str]:
    """``[python, -m, monai.bundle, run, --config_file, ..., --bundle_root, root, *args]``.

    Several config files are merged in order (later ones override), as MONAI expects them: a
    Python-list string such as ``"['train.json','da/mmd.json']"``.
    """
    files = [str(f) for f in config_files]
    config_arg = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, "--bundle_root", str(bundle_root), *args]


def bundle_overrides(**overrides: object) -> list[str]:
    """``--key value`` command-line overrides; non-strings are JSON-encoded (lists, numbers, null)."""
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def run_bundle_logged(
    config_files: Sequence[str | os.PathLike], bundle_root: str | os.PathLike, log_file: str | os.PathLike, env: dict | None = None, **overrides: object
) -> None:
    """Run a bundle with ``overrides``, its output going to ``log_file``; raise with the log's path on failure."""
    cmd = bundle_run_command(config_files, bundle_root, *bundle_overrides(**overrides))
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"bundle run {[Path(c).name for c in config_files]} failed (exit {result.returncode}); see {log_file}")
