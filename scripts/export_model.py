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

from custom.engines.utils import CheckpointError
from custom.inference.from_bundle import load_bundle_network
from custom.networks import check_window_size, network_downsampling
from custom.utils.io import atomic_path, check_distinct_from_inputs, check_output_path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "em_mitochondria"


def _export_args(bundle: str | Path, checkpoint: str) -> dict:
    """The bundle's config files, and ``key_in_ckpt`` for checkpoints nesting the weights under ``model``."""
    configs = Path(bundle) / "configs"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return {
        "ckpt_file": checkpoint, "config_file": str(configs / "inference.json"), "meta_file": str(configs / "metadata.json"),
        "key_in_ckpt": "model" if isinstance(state, dict) and isinstance(state.get("model"), dict) else "",
        "checkpoint": checkpoint,  # a config override: the network is built as this checkpoint records it
    }


def _reference(checkpoint: str, bundle: str | Path) -> torch.nn.Module:
    return load_bundle_network(bundle, checkpoint, device="cpu")[0]


def _check(name: str, exported_output: np.ndarray, reference_output: np.ndarray, atol: float) -> float:
    diff = float(np.abs(exported_output - reference_output).max())
    print(f"{name}: max |exported - checkpoint| = {diff:.2e} (atol {atol})")
    if not diff <= atol:
        raise SystemExit(f"{name}: exported model differs from the checkpoint by {diff:.2e} > {atol}.")
    return diff


def _parse_shape(input_shape: str | tuple, network: torch.nn.Module) -> list[int]:
    """(batch, channels, *spatial) as integers, or ``SystemExit`` when it is not one the network takes."""
    try:
        shape = [int(v) for v in (input_shape.split(",") if isinstance(input_shape, str) else input_shape)]
    except (TypeError, ValueError):
        raise SystemExit(f"--input-shape must be integers batch,channels,*spatial (e.g. 4,1,256,256), got {input_shape!r}.") from None
    dims = getattr(network, "spatial_dims", len(shape) - 2)
    if len(shape) != dims + 2 or min(shape) < 1:
        raise SystemExit(f"--input-shape {shape}: expected {dims + 2} positive integers (batch, channels and {dims} spatial sizes).")
    try:
        check_window_size(network, shape[2:], "--input-shape")
    except ValueError as err:
        raise SystemExit(str(err)) from None
    return shape


def _prepared(checkpoint: str, output: str, bundle: str | Path, input_shape: str | tuple, overwrite: bool) -> tuple[torch.nn.Module, list[int]]:
    """Check everything before exporting: the output is not the checkpoint, is new (or ``overwrite``)
    and its folder exists; the checkpoint loads into the bundle's network; the shape fits it."""
    try:
        check_distinct_from_inputs(output, [checkpoint])
        if Path(output).is_dir():
            raise FileExistsError(f"{output} is a folder; give the export a file name, e.g. {Path(output) / 'model.ts'}.")
        if not Path(output).parent.is_dir():
            raise FileNotFoundError(f"the folder of {output} does not exist; create it first.")
        check_output_path(output, overwrite)
        network = _reference(checkpoint, bundle)
    except (FileExistsError, FileNotFoundError, PermissionError, CheckpointError) as err:
        raise SystemExit(f"error: {err}") from None
    return network, _parse_shape(input_shape, network)


def torchscript(checkpoint: str, output: str, bundle: str = str(BUNDLE), input_shape: str = "1,1,256,256", atol: float = 1e-4, overwrite: bool = False) -> float:
    """Trace the network to TorchScript (``monai.bundle ckpt_export``); returns the max output difference.

    The export appears under ``output`` only once it matches the checkpoint; an existing file is kept unless ``overwrite``.
    """
    reference, shape = _prepared(checkpoint, output, bundle, input_shape, overwrite)
    x = torch.randn(shape[0], shape[1], *[max(f, s // 2 // f * f) for s, f in zip(shape[2:], _factors(reference))])  # another size than the trace
    with atomic_path(output, overwrite=overwrite) as tmp:
        ckpt_export("network_def", filepath=str(tmp), use_trace=True, input_shape=shape, **_export_args(bundle, checkpoint))
        with torch.no_grad():
            return _check("torchscript", torch.jit.load(str(tmp))(x).numpy(), reference(x).numpy(), atol)


def onnx(checkpoint: str, output: str, bundle: str = str(BUNDLE), input_shape: str = "1,1,256,256", atol: float = 1e-4, overwrite: bool = False) -> float:
    """Export to ONNX (``monai.bundle onnx_export``) and compare ONNX Runtime with the checkpoint.

    The export appears under ``output`` only once it matches the checkpoint; an existing file is kept unless ``overwrite``.
    """
    try:
        import onnxruntime
    except ImportError:
        raise SystemExit('error: ONNX export needs the export extra: pip install -e ".[export]"') from None
    reference, shape = _prepared(checkpoint, output, bundle, input_shape, overwrite)
    x = torch.randn(shape)
    with atomic_path(output, overwrite=overwrite) as tmp:
        onnx_export("network_def", filepath=str(tmp), input_shape=shape, **_export_args(bundle, checkpoint))
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        exported = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            return _check("onnx", exported, reference(x).numpy(), atol)


def _factors(network: torch.nn.Module) -> tuple[int, ...]:
    return network_downsampling(network) or (1,) * getattr(network, "spatial_dims", 2)


if __name__ == "__main__":
    fire.Fire({"torchscript": torchscript, "onnx": onnx})
