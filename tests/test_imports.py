"""Every sub-package of ``custom`` imports on its own, in a fresh interpreter (no import cycles)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO_ROOT

SUBPACKAGES = sorted(p.name for p in (REPO_ROOT / "custom").iterdir() if (p / "__init__.py").is_file())


def test_the_subpackages_are_found():
    assert {"data", "engines", "inference", "transforms", "utils"} <= set(SUBPACKAGES)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_imports_alone(name):
    result = subprocess.run([sys.executable, "-c", f"import custom.{name}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]
