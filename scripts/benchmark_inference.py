"""Inference throughput and memory: plain MONAI on the whole in-memory volume vs our blockwise engine.

    python scripts/benchmark_inference.py run                         # synthetic 16 x 1024 x 1024 volume
    python scripts/benchmark_inference.py run --volume ../shared/data/.../stack.tif --checkpoint model.pt
    python scripts/benchmark_inference.py large --size 1000           # 1 Gvox zarr: peak RSS of ours
    python scripts/benchmark_inference.py run3d                       # 3D anisotropic U-Net, 32 x 512 x 512

Every variant runs in its own process (so peak RSS is its own) on the same model, volume, window
(roi, overlap 0.25, Gaussian blending) and threads:

* ``monai``: load the whole volume, ``NormalizeIntensity``, ``SliceInferer`` (sw_batch_size 4), eager
  float32, ``torch.no_grad`` — the plain MONAI way;
* ``ours``: ``scripts/segment.py`` (lazy blocks, channels-last, sections batched, zarr output);
* ``ours x2``: the same under ``torchrun --nproc_per_node=2`` (one thread per process);
* both again with ``--backend onnxruntime`` (windows through ONNX Runtime; the export at start-up
  is not timed, like model loading).

The table reports voxels/s (end to end, including reading and writing), the ratio to plain MONAI,
peak RSS, and how many mask voxels differ from the plain MONAI mask. Writes
``results/inference_benchmark.{md,json}``. ``run3d`` compares the same two ways for the 3D variant
(``configs/train_3d.json``: kernels and strides shaped by the voxel size): MONAI's
``SlidingWindowInferer`` on the whole volume vs ``segment.py``'s blocks with halos along z too
(``results/inference_benchmark_3d.{md,json}``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
import numpy as np
import torch

from custom.utils import atomic_path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "em_mitochondria"
RESULTS = REPO / "results"
ROI = (256, 256)
OVERLAP = 0.25


def _peak_rss_mb(children: bool = False) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_maxrss / 1024.0


def monai_baseline(volume: str, checkpoint: str, mask_out: str, roi: str = ",".join(map(str, ROI))) -> None:
    """(Worker) plain MONAI whole-volume inference (``SliceInferer`` for a 2D roi, ``SlidingWindowInferer``
    for a 3D one); prints a JSON line and saves the mask (.npy)."""
    from monai.inferers import SliceInferer, SlidingWindowInferer
    from monai.transforms import NormalizeIntensity

    from custom.data import read_volume
    from custom.inference.from_bundle import load_bundle_network

    network, _ = load_bundle_network(BUNDLE, checkpoint, device="cpu")
    start = time.perf_counter()  # from reading the volume to the mask, as segment_volume counts
    array, _ = read_volume(volume)
    x = NormalizeIntensity()(torch.from_numpy(array.astype(np.float32)))[None, None]
    window = [int(r) for r in str(roi).split(",")] if isinstance(roi, str) else list(roi)
    if len(window) == 3:
        inferer = SlidingWindowInferer(roi_size=window, sw_batch_size=4, overlap=OVERLAP, mode="gaussian")
    else:
        inferer = SliceInferer(spatial_dim=0, roi_size=window, sw_batch_size=4, overlap=OVERLAP, mode="gaussian")
    with torch.no_grad():
        prob = torch.softmax(inferer(x, network), 1)[0, 1].numpy()
    np.save(mask_out, prob > 0.5)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "voxels": int(array.size), "peak_rss_mb": _peak_rss_mb()}))


def _ours(volume: str, checkpoint: str, output: str, nproc: int, extra: list[str], roi: tuple[int, ...] = ROI) -> dict:
    """scripts/segment.py (under torchrun for nproc > 1); its own timing: reading the volume to the written mask."""
    summary = Path(output).with_suffix(".json")
    command = [str(REPO / "scripts" / "segment.py"), "run", volume, output, "--checkpoint", checkpoint, "--device", "cpu",
               "--roi-size", ",".join(map(str, roi)), "--overlap", str(OVERLAP), "--overwrite", "--summary-json", str(summary), *extra]
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    result = subprocess.run([*runner, *command], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode:
        raise RuntimeError(f"segment.py failed:\n{result.stderr[-3000:]}")
    return {"seconds": json.loads(summary.read_text())["seconds"]}


def _run_worker(name: str, *args: str) -> dict:
    """Run a worker of this script in a fresh process; its JSON line plus its own peak RSS."""
    result = subprocess.run([sys.executable, __file__, name, *args], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def ours_worker(
    volume: str, checkpoint: str, output: str, nproc: int = 1, backend: str = "torch", block_shape: str = "4,1024,1024", roi: str = ",".join(map(str, ROI))
) -> None:
    """(Worker) our engine through scripts/segment.py; prints a JSON line with the peak RSS of its processes."""
    window = tuple(int(r) for r in str(roi).split(",")) if isinstance(roi, str) else tuple(roi)
    block = str(block_shape) if isinstance(block_shape, str) else ",".join(map(str, block_shape))
    timing = _ours(volume, checkpoint, output, int(nproc), ["--block-shape", block, "--backend", backend], roi=window)
    print(json.dumps({**timing, "peak_rss_mb": _peak_rss_mb(children=True)}))


def _synthetic_volume(path: Path, sections: int, pixels: int) -> None:
    from custom.data import synthesize_volume
    from custom.data.synthetic import SOURCE_MICROSCOPE
    from custom.data.writers import write_volume

    image, _, spacing = synthesize_volume(SOURCE_MICROSCOPE, n_sections=sections, extent_nm=pixels * SOURCE_MICROSCOPE.pixel_size_nm)
    write_volume(path, image, spacing)


def _random_checkpoint(path: Path) -> str:
    """The bundle's network with fixed random weights (speed and equality do not depend on training)."""
    from custom.inference.from_bundle import bundle_parser

    torch.manual_seed(0)
    torch.save(bundle_parser(BUNDLE).get_parsed_content("network_def").state_dict(), path)
    return str(path)


def _markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# Inference benchmark{meta.get('title', '')}",
        "",
        f"Volume {meta['volume']} ({' x '.join(map(str, meta['shape']))} = {meta['voxels'] / 1e6:.1f} Mvox), "
        f"{meta['network']}, roi {'x'.join(map(str, meta['roi']))}, overlap {OVERLAP}, Gaussian blending, "
        f"{meta['cpu_count']} CPU cores, torch {meta['torch']}. Each variant is its own process, best of {meta['repeats']} interleaved runs; times run from reading the "
        "volume to the finished mask (reading, normalisation, inference, writing; model loading and imports excluded).",
        "",
        "| variant | seconds | Mvox/s | vs plain MONAI | peak RSS (MB) | mask voxels differing from MONAI |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['seconds']:.1f} | {r['voxels_per_s'] / 1e6:.3f} | {r['speedup']:.2f}x | {r['peak_rss_mb']:.0f} | "
            f"{r['mask_diff']} |"
        )
    return "\n".join(lines) + "\n" + (f"\n{meta['note']}\n" if meta.get("note") else "")


def _compare(volume: str, checkpoint: str, variants: dict, repeats: int, reference_mask: Path) -> list[dict]:
    """Run every variant (worker name, output, extra args) ``repeats`` times, interleaved so drifting
    machine load affects all alike; the fastest run of each, with its mask compared to the first (plain MONAI) variant's."""
    import zarr

    from custom.data.lazy import open_volume

    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (worker, output, args) in variants.items():
            runs[name].append(_run_worker(worker, volume, checkpoint, output, *args))
    reference = np.load(reference_mask)
    rows = []
    for name, (worker, output, _) in variants.items():
        mask = reference if worker == "monai_baseline" else zarr.open_group(output, mode="r")["labels/mask/0"][...]
        best = min(runs[name], key=lambda r: r["seconds"])
        rows.append({"variant": name, **best, "all_seconds": [r["seconds"] for r in runs[name]], "mask_diff": int((mask != reference).sum())})
    n = int(np.prod(open_volume(volume).shape))
    for row in rows:
        row["voxels_per_s"] = n / row["seconds"]
        row["speedup"] = rows[0]["seconds"] / row["seconds"]
    return rows


def _write(rows: list[dict], meta: dict, out_dir: str, stem: str) -> None:
    text = _markdown(rows, meta)
    print(text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


def _meta(volume_name: str, volume: str, repeats: int, network: str, roi: tuple[int, ...], **extra) -> dict:
    from custom.data.lazy import open_volume

    shape = open_volume(volume).shape
    return {
        "repeats": repeats, "volume": volume_name, "shape": list(shape), "voxels": int(np.prod(shape)), "network": network, "roi": list(roi),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "platform": platform.platform(), **extra,
    }  # fmt: skip


def run(
    volume: str | None = None, checkpoint: str | None = None, sections: int = 16, pixels: int = 1024, repeats: int = 2, out_dir: str = str(RESULTS)
) -> list[dict]:
    """Plain MONAI vs ours (1 and 2 processes) on one volume, ``repeats`` interleaved rounds (fastest kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        name = Path(volume).name if volume else "synthetic (source microscope)"
        if volume is None:
            volume = str(tmp_path / "synthetic.tif")
            _synthetic_volume(Path(volume), sections, pixels)
        checkpoint = checkpoint or _random_checkpoint(tmp_path / "model.pt")
        variants = {"plain MONAI (SliceInferer, whole volume)": ("monai_baseline", str(tmp_path / "monai_mask.npy"), [])}
        for nproc, backend in ((1, "torch"), (2, "torch"), (1, "onnxruntime"), (2, "onnxruntime")):
            label = f"ours, {nproc} process{'es' if nproc > 1 else ''}, {backend}"
            variants[label] = ("ours_worker", str(tmp_path / f"ours{nproc}{backend}.zarr"), [str(nproc), backend])
        rows = _compare(volume, checkpoint, variants, repeats, tmp_path / "monai_mask.npy")
        meta = _meta(name, volume, repeats, "bundle network (2D U-Net)", ROI)
    _write(rows, meta, out_dir, "inference_benchmark")
    return rows


def _anisotropic_checkpoint(path: Path, spacing: tuple[float, float, float], roi: tuple[int, int, int]) -> str:
    """The 3D variant's network for ``spacing`` (``configs/train_3d.json``'s rule) with fixed random weights and its record."""
    from custom.engines import NetworkRecord
    from custom.networks import UNet, anisotropic_layout

    torch.manual_seed(0)
    network = UNet(3, **anisotropic_layout(spacing, 4))
    torch.save({"model": network.state_dict(), "network_record": NetworkRecord(network, spacing[1], roi).state_dict()}, path)
    return str(path)


def run3d(sections: int = 32, pixels: int = 512, roi: str = "8,128,128", block_shape: str = "16,512,512", repeats: int = 2, out_dir: str = str(RESULTS), note: str = "") -> list[dict]:
    """The 3D variant: MONAI ``SlidingWindowInferer`` on the whole volume vs ``segment.py`` blockwise
    (halos along z too), same network, window and threads; ``results/inference_benchmark_3d.{md,json}``."""
    window = tuple(int(r) for r in str(roi).split(",")) if isinstance(roi, str) else tuple(roi)
    block = block_shape if isinstance(block_shape, str) else ",".join(map(str, block_shape))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        volume = str(tmp_path / "synthetic.zarr")
        _synthetic_volume(Path(volume), sections, pixels)
        from custom.data.lazy import open_volume

        spacing = open_volume(volume).spacing
        checkpoint = _anisotropic_checkpoint(tmp_path / "model3d.pt", spacing, window)
        roi_arg = ",".join(map(str, window))
        variants = {
            "plain MONAI (SlidingWindowInferer, whole volume)": ("monai_baseline", str(tmp_path / "monai_mask.npy"), [roi_arg]),
            "ours, 1 process, torch": ("ours_worker", str(tmp_path / "ours.zarr"), ["1", "torch", block, roi_arg]),
        }
        rows = _compare(volume, checkpoint, variants, repeats, tmp_path / "monai_mask.npy")
        layout = json.loads(json.dumps(torch.load(checkpoint, weights_only=True)["network_record"]["network_def"]))
        meta = _meta(
            "synthetic (source microscope)", volume, repeats, f"3D U-Net shaped by the voxel size {list(spacing)} nm (strides {layout['strides']})", window,
            title=" (3D)", block_shape=block, note=note,
        )
    _write(rows, meta, out_dir, "inference_benchmark_3d")
    return rows


def large(
    size: int = 1000, checkpoint: str | None = None, out_dir: str = str(RESULTS), channels: str = "4,8,16,32",
    block_shape: str = "16,1024,1024", note: str = "",
) -> dict:
    """A size^3 uint8 zarr volume segmented by ours: peak RSS (goal < 2 GB) and throughput.

    The record is stored under its ``block_shape`` in ``inference_large.json`` (peak memory grows
    with the block, not the volume). ``note`` says e.g. what else ran, which skews the throughput.
    """
    import zarr

    block_shape = block_shape if isinstance(block_shape, str) else ",".join(map(str, block_shape))  # fire gives a tuple
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        src = zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=(size,) * 3, chunks=(16, 512, 512), dtype="uint8")
        rng = np.random.default_rng(0)
        for z in range(0, size, 16):
            src[z : z + 16] = rng.integers(60, 200, (min(16, size - z), size, size), dtype=np.uint8)
        ckpt = checkpoint
        if ckpt is None:
            from custom.networks import UNet

            ckpt = str(tmp_path / "small.pt")
            torch.save(UNet(2, channels=[int(c) for c in channels.split(",")]).state_dict(), ckpt)
        extra = ["--config-overrides", json.dumps({"network_def#channels": [int(c) for c in channels.split(",")]})] if checkpoint is None else []
        extra += ["--block-shape", block_shape]
        seconds = _ours(str(tmp_path / "big.zarr"), ckpt, str(tmp_path / "out.zarr"), 1, extra)["seconds"]
    record = {"shape": [size] * 3, "block_shape": [int(b) for b in block_shape.split(",")], "voxels": size**3, "seconds": seconds, "voxels_per_s": size**3 / seconds,
              "peak_rss_mb": _peak_rss_mb(children=True), "network_channels": channels if checkpoint is None else "checkpoint",
              "threads": torch.get_num_threads(), "note": note}
    print(json.dumps(record, indent=2))
    out = Path(out_dir, "inference_large.json")
    records = json.loads(out.read_text()) if out.exists() else {}
    records[block_shape] = record
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(records, indent=2) + "\n")
    return record


if __name__ == "__main__":
    fire.Fire({"run": run, "run3d": run3d, "large": large, "monai_baseline": monai_baseline, "ours_worker": ours_worker})
