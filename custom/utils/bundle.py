"""The command line that runs a bundle config through ``python -m monai.bundle run``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def bundle_run_command(config_files: Sequence[str | os.PathLike], bundle_root: str | os.PathLike, *args: str) -> list[str]:
    """``[python, -m, monai.bundle, run, --config_file, ..., --bundle_root, root, *args]``.

    Several config files are merged in order (later ones override), as MONAI expects them: a
    Python-list string such as ``"['train.json','da/mmd.json']"``.
    """
    files = [str(f) for f in config_files]
    config_arg = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, "--bundle_root", str(bundle_root), *args]
