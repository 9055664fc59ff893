"""TorchScript and ONNX exports of the bundle network give the checkpoint's output."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from custom.networks import UNet

from .conftest import REPO_ROOT


@pytest.mark.parametrize("fmt, suffix", [("torchscript", "ts"), ("onnx", "onnx")])
def test_export_matches_checkpoint(tmp_path, fmt, suffix):
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    checkpoint = tmp_path / "model.pt"
    torch.manual_seed(0)
    torch.save({"model": UNet(2).state_dict()}, checkpoint)
    output = tmp_path / f"model.{suffix}"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "export_model.py"), fmt, str(checkpoint), str(output), "--input-shape", "2,1,128,128"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert output.is_file() and "max |exported - checkpoint|" in result.stdout
