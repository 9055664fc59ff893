"""Export a trained bundle network to TorchScript or ONNX with MONAI's bundle tools, and check it.

    python scripts/export_model.py torchscript models/model.pt models/model.ts
    python scripts/export_model.py onnx models/model.pt models/model.onnx --input-shape 4,1,256,256

Both call ``monai.bundle`` (``ckpt_export`` with tracing, ``onnx_export``) on the bundle's
``inference.json`` network, then run the exported model and the checkpoint on the same random input
and fail if they differ by more than ``atol``. TorchScript traces accept any window size that is a
multiple of 8; the ONNX graph keeps the exported input shape, so export it with the (sw_batch_size,
1, roi) windows you run it on.
"""

from __future__ import annotations

from pathlib import Path

import fire
import numpy as np
import torch
from monai.bundle import ckpt_export, onnx_export

from custom.inference.from_bundle import load_bundle_network

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "em_mitochondria"


def _export_args(bundle: str | Path, checkpoint: str) -> dict:
    """The bundle's config files, and ``key_in_ckpt`` for checkpoints nesting the weights under ``model``."""
    configs = Path(bundle) / "configs"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return {
        "ckpt_file": checkpoint, "config_file": str(configs / "inference.json"), "meta_file": str(configs / "metadata.json"),
        "key_in_ckpt": "model" if isinstance(state, dict) and isinstance(state.get("model"), dict) else "",
    }


def _reference(checkpoint: str, bundle: str | Path) -> torch.nn.Module:
    return load_bundle_network(bundle, checkpoint, device="cpu")[0]


def _check(name: str, exported_output: np.ndarray, reference_output: np.ndarray, atol: float) -> float:
    diff = float(np.abs(exported_output - reference_output).max())
    print(f"{name}: max |exported - checkpoint| = {diff:.2e} (atol {atol})")
    if not diff <= atol:
        raise SystemExit(f"{name}: exported model differs from the checkpoint by {diff:.2e} > {atol}.")
    return diff


def _parse_shape(input_shape: str | tuple) -> list[int]:
    return [int(v) for v in (input_shape.split(",") if isinstance(input_shape, str) else input_shape)]


def torchscript(checkpoint: str, output: str, bundle: str = str(BUNDLE), input_shape: str = "1,1,256,256", atol: float = 1e-4) -> float:
    """Trace the network to TorchScript (``monai.bundle ckpt_export``); returns the max output difference."""
    shape = _parse_shape(input_shape)
    ckpt_export("network_def", filepath=output, use_trace=True, input_shape=shape, **_export_args(bundle, checkpoint))
    x = torch.randn(shape[0], shape[1], *[s // 2 for s in shape[2:]])  # another size than the trace
    with torch.no_grad():
        return _check("torchscript", torch.jit.load(output)(x).numpy(), _reference(checkpoint, bundle)(x).numpy(), atol)


def onnx(checkpoint: str, output: str, bundle: str = str(BUNDLE), input_shape: str = "1,1,256,256", atol: float = 1e-4) -> float:
    """Export to ONNX (``monai.bundle onnx_export``) and compare ONNX Runtime with the checkpoint."""
    import onnxruntime

    shape = _parse_shape(input_shape)
    onnx_export("network_def", filepath=output, input_shape=shape, **_export_args(bundle, checkpoint))
    x = torch.randn(shape)
    session = onnxruntime.InferenceSession(output, providers=["CPUExecutionProvider"])
    exported = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        return _check("onnx", exported, _reference(checkpoint, bundle)(x).numpy(), atol)


if __name__ == "__main__":
    fire.Fire({"torchscript": torchscript, "onnx": onnx})
