"""Segment an EM volume of any size with a trained bundle, block by block (CPU or GPU, one or many processes).

    python scripts/segment.py run stack.tif out.zarr --bundle bundles/em_mitochondria
    python scripts/segment.py run sections/ out.zarr --checkpoint models/model.pt --device cuda --instances
    torchrun --nproc_per_node=2 scripts/segment.py run volume.zarr out.zarr --bundle bundles/em_mitochondria

Input: TIFF stack, folder of TIFF/PNG sections, NIfTI or zarr (read lazily, block by block). Output:
``.zarr`` (OME-Zarr: probability, ``labels/mask``, optional ``labels/instances``; resumable after a
crash, shared by torchrun ranks) or, for small volumes, ``.tif``/``.nii.gz`` (``<stem>_prob``,
``<stem>_mask``). The model, window (roi, overlap) and pixel size come from the bundle's
``configs/inference.json``; ``--roi-size``, ``--sw-batch-size`` etc. override them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import fire
import torch
import torch.distributed as dist

from custom.data.lazy import open_volume
from custom.inference import segment_volume
from custom.inference.from_bundle import file_digest, load_bundle_predictor

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


def _spacing_warning(volume_spacing, pixel_size_nm: float) -> None:
    if volume_spacing is None:
        logger.warning("the input has no spacing metadata; assuming it is at the model's %.2f nm pixel size.", pixel_size_nm)
        return
    in_plane = volume_spacing[1:]
    if any(abs(s - pixel_size_nm) > 0.05 * pixel_size_nm for s in in_plane):
        logger.warning(
            "input pixel size %s nm differs from the model's %.2f nm by more than 5%%: resample the volume first "
            "(scripts/prepare_data.py) or pass --input-spacing if the metadata is wrong.", in_plane, pixel_size_nm,
        )


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
    input_spacing: tuple[float, float, float] | None = None,
    zarr_key: str | None = None,
    num_workers: int = 1,
    overwrite: bool = False,
    summary_json: str | None = None,
    config_overrides: dict | None = None,
) -> dict:
    """Segment ``input`` into ``output``; prints and returns a summary (blocks, voxels/s, instances).

    ``tta`` averages the plain and in-plane flipped windows; ``tta_rot90`` adds the 90°/180°/270°
    in-plane rotations (square roi). ``backend`` ``onnxruntime`` runs the
    windows through ONNX Runtime on CPU (exported once at start; needs the ``export`` extra). ``block_shape`` is the core block
    (Z, Y, X) read at once (plus a halo of roi - stride); peak memory grows with it, not with the volume.
    ``config_overrides`` sets other ``inference.json`` ids, e.g. ``'{"network_def#channels": [8, 16, 32]}'``.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rank, world, device = _init_distributed(device)
    try:
        volume = open_volume(input, spacing=input_spacing, zarr_key=zarr_key)
        predictor, parser = load_bundle_predictor(
            bundle, checkpoint, device=device, amp=amp and device.startswith("cuda"), roi_size=list(roi_size) if roi_size else None,
            overlap=overlap, sw_batch_size=sw_batch_size, tta_flip_axes=None if not tta else [-2, -1], tta_rot90=tta_rot90 or None, backend=backend, **(config_overrides or {}),
        )
        _spacing_warning(volume.spacing, float(parser["pixel_size_nm"]))
        summary = segment_volume(
            volume, predictor, output, block_shape=block_shape,
            threshold=parser["threshold"] if threshold is None else threshold, prob_dtype=prob_dtype, instances=instances,
            overwrite=overwrite, num_workers=num_workers, model_id=file_digest(checkpoint or parser.get_parsed_content("checkpoint")),
        )
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    summary.update({"input": str(input), "output": str(output), "device": device, "world_size": world, "rank": rank})
    if rank == 0:
        print(json.dumps(summary, indent=2))
        if summary_json:
            Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    try:
        fire.Fire({"run": run}, serialize=lambda _: None)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError) as err:  # EMDataError, CheckpointError: one line
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
