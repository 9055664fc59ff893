"""Every bundle's metadata verifies offline against the shipped schema, and its README stays short."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import BUNDLES

SCHEMA = BUNDLES / "metadata_schema.json"


def _verify(meta_file, tmp_path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta_file), "--filepath", str(SCHEMA)]
    env = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}  # no network: a download would fail
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)


@pytest.mark.parametrize("bundle", sorted(p.parent.parent.name for p in BUNDLES.glob("*/configs/metadata.json")))
def test_metadata_verifies_offline(bundle, tmp_path):
    result = _verify(BUNDLES / bundle / "configs" / "metadata.json", tmp_path)
    assert result.returncode == 0 and "metadata is verified with no error" in result.stderr + result.stdout, result.stderr[-2000:]


def test_the_shipped_schema_refuses_incomplete_metadata(tmp_path):
    metadata = json.loads((BUNDLES / "em_mitochondria" / "configs" / "metadata.json").read_text())
    del metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    result = _verify(tmp_path / "metadata.json", tmp_path)
    assert result.returncode != 0 and "Failed validating" in result.stderr


@pytest.mark.parametrize("readme", sorted(BUNDLES.glob("*/docs/README.md")), ids=lambda p: p.parts[-3])
def test_bundle_readme_is_a_page_a_user_reads_in_minutes(readme):
    """#31 item 6: what, how, results in brief and what to use; research history lives in results/."""
    assert readme.stat().st_size < 12_000, f"{readme}: {readme.stat().st_size} bytes; move the history to results/"
