"""The command line that runs a bundle config through ``python -m monai.bundle run``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
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


_STATUS = re.compile(r"Epoch|Iter|\d+%\||\d+/\d+ \[")  # Ignite stats and progress bars, tqdm bars


def latest_status(log_file: str | os.PathLike, tail_bytes: int = 16384) -> str | None:
    """The newest progress line of a bundle log (an Ignite stats line or a tqdm/Ignite bar update), if any."""
    try:
        with open(log_file, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if _STATUS.search(line)]
    return lines[-1][:160] if lines else None


def run_bundle_logged(
    config_files: Sequence[str | os.PathLike],
    bundle_root: str | os.PathLike,
    log_file: str | os.PathLike,
    env: dict | None = None,
    progress_every_s: float | None = None,
    **overrides: object,
) -> None:
    """Run a bundle with ``overrides``, its output going to ``log_file``; raise with the log's path on failure.

    With ``progress_every_s``, the console gets the log's path at start and, at that interval, the
    newest progress line of the log (iteration, window batch) whenever it changed, and the last one at the end.
    """
    cmd = bundle_run_command(config_files, bundle_root, *bundle_overrides(**overrides))
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        if progress_every_s:
            print(f"  log: {log_file}", flush=True)
        shown, last_print = None, time.monotonic()
        while process.poll() is None:
            time.sleep(0.5)
            if progress_every_s and time.monotonic() - last_print >= progress_every_s:
                status, last_print = latest_status(log_file), time.monotonic()
                if status and status != shown:
                    print(f"  {status}", flush=True)
                    shown = status
    final = latest_status(log_file) if progress_every_s else None
    if final and final != shown:
        print(f"  {final}", flush=True)
    if process.returncode != 0:
        raise RuntimeError(f"bundle run {[Path(c).name for c in config_files]} failed (exit {process.returncode}); see {log_file}")
