"""Segment an EM volume of any size with a trained bundle, block by block (CPU or GPU, one or many processes).

    python scripts/segment.py run stack.tif out.zarr --bundle bundles/em_mitochondria
    python scripts/segment.py run sections/ out.zarr --checkpoint models/model.pt --device cuda --instances
    torchrun --nproc_per_node=2 scripts/segment.py run volume.zarr out.zarr --bundle bundles/em_mitochondria

Input: TIFF stack, folder of TIFF/PNG sections, NIfTI or zarr (read lazily, block by block). Output:
``.zarr`` (OME-Zarr: probability, ``labels/mask``, optional ``labels/instances``; resumable after a
crash, shared by torchrun ranks) or, for small volumes, ``.tif``/``.nii.gz`` (``<stem>_prob``,
``<stem>_mask``). The model, window (roi, overlap) and pixel size come from the bundle's
``configs/inference.json``; ``--roi-size``, ``--sw-batch-size`` etc. override them. An input whose
pixel size differs from the model's is segmented at the model's pixel size with ``--resample`` (and
written back on the input's grid); without spacing metadata, ``--input-spacing z,y,x`` (nm) gives it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import fire
import torch
import torch.distributed as dist

from custom.data.lazy import open_volume
from custom.inference import ResampledPredictor, segment_volume
from custom.inference.from_bundle import file_digest, load_bundle_predictor
from custom.utils.errors import exit_with

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("segment")


def _init_distributed(device: str) -> tuple[int, int, str]:
    """Join the torchrun process group (gloo on CPU, nccl on GPU); (rank, world size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    else:  # share the CPU cores between the processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return dist.get_rank(), world, device


def _output_spacing(volume_spacing, pixel_size_nm: float, resample: bool) -> tuple[tuple[float, float, float], str | None]:
    """The spacing to record in the outputs and, when it is assumed rather than read, why (logged and recorded)."""
    if volume_spacing is not None:
        return tuple(volume_spacing), None
    if resample:
        raise ValueError("--resample needs the input's pixel size, but the input has no spacing metadata; pass --input-spacing z,y,x (nm).")
    note = (
        f"the input has no spacing metadata: assumed to be at the model's {pixel_size_nm:g} nm pixel size in-plane, and {pixel_size_nm:g} nm "
        "along z; pass --input-spacing z,y,x (nm) to segment and record the real one."
    )
    logger.warning(note)
    return (pixel_size_nm,) * 3, note


def _resampled(predictor, volume_spacing, pixel_size_nm: float, resample: bool):
    """``predictor`` run at the model's pixel size with ``resample``; else a warning when the in-plane pixel size differs by more than 5 %."""
    if volume_spacing is None:
        return predictor
    zoom = [s / pixel_size_nm for s in volume_spacing[1:]]
    if resample:
        logger.info("resampling in-plane by %s to the model's %.2f nm pixel size; outputs stay on the input grid.", [round(z, 4) for z in zoom], pixel_size_nm)
        return ResampledPredictor(predictor, zoom)
    if any(abs(z - 1) > 0.05 for z in zoom):
        logger.warning(
            "input pixel size %s nm differs from the model's %.2f nm by more than 5%%: pass --resample to segment at the model's "
            "pixel size (outputs stay on the input grid), or --input-spacing z,y,x if the metadata is wrong.", list(volume_spacing[1:]), pixel_size_nm,
        )
    return predictor


def run(
    input: str,
    output: str,
    bundle: str = str(REPO / "bundles" / "em_mitochondria"),
    checkpoint: str | None = None,
    device: str = "cuda" if torch.cuda.is_available() else "cpu",
    amp: bool = True,
    block_shape: tuple[int, int, int] = (16, 1024, 1024),
    roi_size: tuple[int, ...] | None = None,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    tta: bool = False,
    tta_rot90: bool = False,
    backend: str = "torch",
    threshold: float | None = None,
    prob_dtype: str = "uint8",
    instances: bool = False,
    min_size: int = 50,
    resample: bool = False,
    input_spacing: tuple[float, float, float] | None = None,
    zarr_key: str | None = None,
    num_workers: int = 1,
    overwrite: bool = False,
    summary_json: str | None = None,
    config_overrides: dict | None = None,
    quiet: bool = False,
) -> dict:
    """Segment ``input`` into ``output``; prints and returns a summary (blocks, voxels/s, instances).

    ``tta`` averages the plain and in-plane flipped windows; ``tta_rot90`` adds the 90°/180°/270°
    in-plane rotations (square roi). ``backend`` ``onnxruntime`` runs the
    windows through ONNX Runtime on CPU (exported once at start; needs the ``export`` extra). ``block_shape`` is the core block
    (Z, Y, X) read at once (plus a halo of roi - stride); peak memory grows with it, not with the volume.
    ``config_overrides`` sets other ``inference.json`` ids, e.g. ``'{"network_def#channels": [8, 16, 32]}'``.
    ``instances`` labels connected components of at least ``min_size`` voxels (default 50, as one-pixel
    specks of a noisy mask are not objects; 0 keeps all). ``resample`` segments at the model's pixel
    size an input whose in-plane pixel size differs (outputs keep the input grid and spacing).
    ``quiet``: no summary on the console (for callers that report it themselves).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rank, world, device = _init_distributed(device)
    try:
        volume = open_volume(input, spacing=input_spacing, zarr_key=zarr_key)
        predictor, parser = load_bundle_predictor(
            bundle, checkpoint, device=device, amp=amp and device.startswith("cuda"), roi_size=list(roi_size) if roi_size else None,
            overlap=overlap, sw_batch_size=sw_batch_size, tta_flip_axes=None if not tta else [-2, -1], tta_rot90=tta_rot90 or None, backend=backend, **(config_overrides or {}),
        )
        pixel_size_nm = float(parser.get_parsed_content("pixel_size_nm"))
        spacing, spacing_note = _output_spacing(volume.spacing, pixel_size_nm, resample)
        summary = segment_volume(
            volume, _resampled(predictor, volume.spacing, pixel_size_nm, resample), output, block_shape=block_shape,
            threshold=parser.get_parsed_content("threshold") if threshold is None else threshold, prob_dtype=prob_dtype, instances=instances, min_size=min_size,
            overwrite=overwrite, num_workers=num_workers, model_id=file_digest(parser.get_parsed_content("checkpoint")),
            spacing=spacing, spacing_note=spacing_note,
        )
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    summary.update({"input": str(input), "output": str(output), "device": device, "world_size": world, "rank": rank})
    if rank == 0:
        if not quiet:
            print(json.dumps(summary, indent=2))
        if summary_json:
            Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    try:
        fire.Fire({"run": run}, serialize=lambda _: None)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError) as err:  # EMDataError, CheckpointError: one line
        exit_with(str(err))


if __name__ == "__main__":
    main()
