"""Real EM data from ../shared/data: readers, checksums, preparation, and one bundle run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from custom.data import load_datalist, read_volume
from custom.data.datasets import get_fafb_mito_paths, load_drosophila_vnc, load_fafb_mito
from custom.engines import recorded

from .conftest import REPO_ROOT, run_bundle

pytestmark = pytest.mark.realdata


def test_vnc_mitochondria_stack(shared_data):
    image, label, spacing = load_drosophila_vnc(shared_data)
    assert image.shape == label.shape == (20, 1024, 1024)
    assert image.dtype == np.uint8 and spacing == (50.0, 4.6, 4.6)
    assert 0.03 < label.mean() < 0.06  # about 4.5 % foreground after thresholding anti-aliased masks


def test_fafb_crops_and_checksums(shared_data):
    get_fafb_mito_paths(shared_data)  # verifies every file's sha256 without network access
    image, label, spacing = load_fafb_mito(shared_data)
    assert image.shape == label.shape == (8, 1736, 1736)
    assert set(np.unique(label)) == {0, 1} and spacing == (40.0, 8.0, 8.0)  # the crops' pixel size, not FAFB's native 4 nm


def test_prepare_data_layout_split_and_idempotence(prepared, shared_data, tmp_path):
    import subprocess
    import sys

    train = read_volume(load_datalist(prepared / "fafb_to_vnc", "target_training")[0]["image"])[0]
    test = read_volume(load_datalist(prepared / "fafb_to_vnc", "target_test")[0]["label"])[0]
    assert train.shape == (20, 1024, 686) and test.shape == (20, 1024, 338)
    volumes = load_datalist(prepared / "fafb_to_vnc", "target_volumes")
    assert [read_volume(v["image"])[0].shape for v in volumes] == [(20, 1024, 1024), (20, 1024, 1024)]
    again = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "prepare_data.py"), "from_dir", str(shared_data), str(prepared)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0 and "already prepared" in again.stdout
    assert str(prepared) not in again.stdout.splitlines()  # the path is said once, in a sentence, not echoed again by fire
    stale = tmp_path / "stale"  # prepared when the FAFB crops were taken as 4 nm: refused, not reused
    stale.mkdir()
    marker = json.loads((prepared / "prepared.json").read_text())
    (stale / "prepared.json").write_text(json.dumps({**marker, "spacing_nm": {**marker["spacing_nm"], "fafb": [40.0, 4.0, 4.0]}}))
    refused = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "prepare_data.py"), "from_dir", str(shared_data), str(stale)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1 and "was prepared with pixel sizes" in refused.stderr and "--force" in refused.stderr


def test_bundle_trains_and_evaluates_on_vnc_to_fafb(prepared, tmp_path):
    # two iterations at the cpu budget's 10 nm (validation and inference of the real regions at the default 5 nm
    # would take four times as long, for the same checks)
    fast = ("--max_epochs", "1", "--iterations_per_epoch", "2", "--val_interval", "1", "--batch_size", "2", "--pixel_size_nm", "10.0")
    run_bundle(["train.json"], tmp_path, "--dataset_dir", str(prepared / "vnc_to_fafb"), *fast)
    run_bundle(["inference.json", "evaluate.json"], tmp_path, "--dataset_dir", str(prepared / "vnc_to_fafb"))
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["images"][0].endswith("fafb_target_test.tif")
    assert 0.0 <= result["metrics"]["iou"] <= 1.0
    assert recorded(tmp_path / "models" / "model.pt", "pixel_size_nm", 5.0) == 10.0  # the model records 10 nm, which inference.json reads
