"""A checkpoint knows its network (#32 item 4): inference builds what it records, and refuses a conflicting setting."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from custom.data import read_volume, write_volume
from custom.engines import NetworkRecord, read_network_record, recorded
from custom.engines.utils import CheckpointError, load_pretrained
from custom.networks import UNet

from .conftest import REPO_ROOT, run_bundle


@pytest.fixture(scope="module")
def checkpoint_3d(tmp_path_factory) -> str:
    """A model.pt of a small anisotropic 3D U-Net, saved the way training saves it (weights + record)."""
    torch.manual_seed(0)
    network = UNet(3, channels=(8, 16), strides=((1, 2, 2),), kernel_sizes=((1, 3, 3), 3))
    path = tmp_path_factory.mktemp("model3d") / "model.pt"
    torch.save({"model": network.state_dict(), "network_record": NetworkRecord(network, 10.0, [4, 32, 32]).state_dict()}, path)
    return str(path)


def test_the_record_describes_the_network_and_defaults_come_from_it(checkpoint_3d, tmp_path):
    record = read_network_record(checkpoint_3d)
    assert record["network_def"]["spatial_dims"] == 3 and record["network_def"]["strides"] == [[1, 2, 2]] and record["roi_size"] == [4, 32, 32]
    assert recorded(checkpoint_3d, "network_def#channels", [16]) == [8, 16] and recorded(checkpoint_3d, "pixel_size_nm", 5.0) == 10.0
    assert recorded(tmp_path / "missing.pt", "pixel_size_nm", 5.0) == 5.0  # no file: the config's default
    rebuilt = UNet(**{k: v for k, v in record["network_def"].items() if k != "_target_"})
    load_pretrained(rebuilt, checkpoint_3d)
    with pytest.raises(CheckpointError, match=r"records a network with kernel_sizes \[\[1, 3, 3\], 3\] \(the config builds \[3, 3\]\), strides .*--network_def#kernel_sizes"):
        load_pretrained(UNet(3, channels=(8, 16)), checkpoint_3d)  # same tensor names, other kernels: would have loaded into the wrong network


def test_bundle_inference_builds_the_recorded_3d_network_and_refuses_a_conflicting_override(checkpoint_3d, tmp_path):
    volume = np.random.default_rng(0).normal(100, 20, (6, 48, 40)).astype(np.float32)
    write_volume(tmp_path / "vol.tif", volume, (50.0, 10.0, 10.0))
    common = ["--input_files", f"['{tmp_path / 'vol.tif'}']", "--checkpoint", checkpoint_3d]
    run_bundle(["inference.json"], tmp_path / "run", *common)  # no --spatial_dims 3, --roi_size or --pixel_size_nm repeated
    mask, spacing = read_volume(tmp_path / "run" / "prediction" / "vol_mask.tif")
    assert mask.shape == volume.shape and spacing == pytest.approx((50.0, 10.0, 10.0))
    with pytest.raises(AssertionError) as failed:
        run_bundle(["inference.json"], tmp_path / "run2", *common, "--spatial_dims", "2", "--roi_size", "[32,32]")
    last = failed.value.args[0].rstrip().splitlines()[-1]
    assert last.startswith("error: ") and "records a network with spatial_dims 3 (the config builds 2)" in last and "(e.g. --spatial_dims)" in last


def test_segment_builds_the_recorded_network(checkpoint_3d, tmp_path):
    write_volume(tmp_path / "vol.zarr", np.random.default_rng(1).normal(100, 20, (6, 48, 40)).astype(np.float32), (50.0, 10.0, 10.0))
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "segment.py"), "run", str(tmp_path / "vol.zarr"), str(tmp_path / "out.zarr"), "--checkpoint", checkpoint_3d, "--device", "cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["blocks"] >= 1 and "differs from the model's" not in result.stderr  # the recorded 10 nm pixel size
