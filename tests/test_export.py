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


def test_onnx_export_without_onnxruntime_names_the_extra_to_install(tmp_path, checkpoint):
    """#33 item 6: the README's main-job install has no onnxruntime; the error says which extra brings it."""
    script = REPO_ROOT / "scripts" / "export_model.py"
    blocked = (
        "import runpy, sys; sys.modules['onnxruntime'] = None; "  # as if it were not installed
        f"sys.argv = ['export_model.py', 'onnx', {checkpoint!r}, {str(tmp_path / 'm.onnx')!r}]; "
        f"runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1] == 'error: ONNX export needs the export extra: pip install -e ".[export]"'
    assert not (tmp_path / "m.onnx").exists()
