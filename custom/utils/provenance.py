"""Where a result came from: the commit of the code that produced it."""

from __future__ import annotations

import os
import subprocess


def git_commit(repo: str | os.PathLike) -> str:
    """HEAD of the git repository at ``repo``, or "unknown" outside a checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
