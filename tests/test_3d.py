"""The 3D variant (configs/train_3d.json): a U-Net shaped by the voxel size, trainable with the
adaptation methods, verifiable against its metadata, and segmented blockwise with halos along z."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr
from custom.data.writers import write_volume
from custom.engines import NetworkRecord
from custom.engines.utils import read_model_state
from custom.losses.sampling import feature_samples
from custom.networks import UNet, anisotropic_layout, training_spacing
from monai.inferers import sliding_window_inference
from monai.transforms import NormalizeIntensity

from .conftest import CONFIGS, REPO_ROOT, run_bundle


def test_layout_follows_the_voxel_size():
    vnc = anisotropic_layout(training_spacing((50.0, 4.6, 4.6), 10.0), 4)  # 50 nm sections, trained at 10 nm
    assert vnc["strides"] == [[1, 2, 2], [1, 2, 2], [2, 2, 2]]
    assert vnc["kernel_sizes"] == [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]]
    iso = anisotropic_layout((8.0, 8.0, 8.0), 4)
    assert iso["strides"] == [[2, 2, 2]] * 3 and iso["kernel_sizes"] == [[3, 3, 3]] * 4
    assert anisotropic_layout((50.0, 5.0, 5.0), 4)["strides"] == [[1, 2, 2]] * 3  # z still 2.5x coarser at the bottleneck's input
    with pytest.raises(ValueError):
        anisotropic_layout((0.0, 5.0, 5.0), 4)


def test_features_of_a_3d_network_sample_positions_over_z_y_x():
    network = UNet(3, channels=(4, 8), **anisotropic_layout((40.0, 10.0, 10.0), 2))
    features = network.encode(torch.randn(2, 1, 4, 16, 16))
    assert features[1].shape == (2, 8, 4, 8, 8)  # in-plane pooling only at 40 / 10 nm
    assert feature_samples(features[1], max_samples=None).shape == (2 * 4 * 8 * 8, 8)


def test_3d_variant_trains_with_an_adaptation_method_and_records_its_layout(tmp_path):
    configs = ["train.json", "train_3d.json", "da/mmd.json"]
    run_bundle(configs, tmp_path, "--max_epochs", "1", "--iterations_per_epoch", "1", "--val_interval", "1", "--batch_size", "1")
    record = torch.load(tmp_path / "models" / "model_final.pt", weights_only=True)["network_record"]
    assert record["network_def"]["spatial_dims"] == 3 and record["roi_size"] == [8, 128, 128]
    assert record["network_def"]["strides"][0] == [1, 2, 2]  # synthetic default: 40 nm sections, 5 nm pixels
    assert read_model_state(tmp_path / "models" / "model_final.pt")


def test_3d_variant_matches_its_metadata(tmp_path):
    cmd = [
        sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--bundle_root", str(tmp_path),
        "--meta_file", json.dumps([str(CONFIGS / "metadata.json"), str(CONFIGS / "metadata_3d.json")]),
        "--config_file", json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "train_3d.json")]),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_segment_cli_with_a_3d_checkpoint_equals_whole_volume_sliding_window(tmp_path):
    torch.manual_seed(0)
    roi = (4, 32, 32)
    network = UNet(3, channels=(8, 16, 32), **anisotropic_layout((40.0, 5.0, 5.0), 3)).eval()
    checkpoint = tmp_path / "model3d.pt"
    torch.save({"model": network.state_dict(), "network_record": NetworkRecord(network, 5.0, roi).state_dict()}, checkpoint)
    volume = np.random.default_rng(3).integers(40, 220, (13, 70, 75)).astype(np.uint8)
    write_volume(tmp_path / "in.zarr", volume, (40.0, 5.0, 5.0))
    cmd = [
        sys.executable, str(REPO_ROOT / "scripts" / "segment.py"), "run", str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr"),
        "--checkpoint", str(checkpoint), "--device", "cpu", "--block-shape", "4,40,40", "--prob-dtype", "float16", "--quiet",
    ]  # fmt: skip  (no --spatial-dims or --roi-size: the checkpoint's record says 3D and the window)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    x = NormalizeIntensity()(torch.from_numpy(volume.astype(np.float32)))[None, None]
    with torch.no_grad():
        reference = torch.softmax(sliding_window_inference(x, roi, 4, network, overlap=0.25, mode="gaussian"), 1)[0, 1].numpy()
    blockwise = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["probability"][...].astype(np.float32)
    np.testing.assert_allclose(blockwise, reference, atol=2e-3)  # float16 output
