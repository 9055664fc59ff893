"""Inference throughput and memory: plain MONAI on the whole in-memory volume vs our blockwise engine.

    python scripts/benchmark_inference.py run                         # synthetic 16 x 1024 x 1024 volume
    python scripts/benchmark_inference.py run --volume ../shared/data/.../stack.tif --checkpoint model.pt
    python scripts/benchmark_inference.py large --size 1000           # 1 Gvox zarr: peak RSS of ours

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
``results/inference_benchmark.{md,json}``.
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


def monai_baseline(volume: str, checkpoint: str, mask_out: str) -> None:
    """(Worker) plain MONAI whole-volume inference; prints a JSON line and saves the mask (.npy)."""
    from monai.inferers import SliceInferer
    from monai.transforms import NormalizeIntensity

    from custom.data import read_volume
    from custom.inference.from_bundle import load_bundle_network

    network, _ = load_bundle_network(BUNDLE, checkpoint, device="cpu")
    start = time.perf_counter()  # from reading the volume to the mask, as segment_volume counts
    array, _ = read_volume(volume)
    x = NormalizeIntensity()(torch.from_numpy(array.astype(np.float32)))[None, None]
    inferer = SliceInferer(spatial_dim=0, roi_size=ROI, sw_batch_size=4, overlap=OVERLAP, mode="gaussian")
    with torch.no_grad():
        prob = torch.softmax(inferer(x, network), 1)[0, 1].numpy()
    np.save(mask_out, prob > 0.5)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "voxels": int(array.size), "peak_rss_mb": _peak_rss_mb()}))


def _ours(volume: str, checkpoint: str, output: str, nproc: int, extra: list[str]) -> dict:
    """scripts/segment.py (under torchrun for nproc > 1); its own timing: reading the volume to the written mask."""
    summary = Path(output).with_suffix(".json")
    command = [str(REPO / "scripts" / "segment.py"), "run", volume, output, "--checkpoint", checkpoint, "--device", "cpu",
               "--roi-size", ",".join(map(str, ROI)), "--overlap", str(OVERLAP), "--overwrite", "--summary-json", str(summary), *extra]
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


def ours_worker(volume: str, checkpoint: str, output: str, nproc: int = 1, backend: str = "torch", block_shape: str = "4,1024,1024") -> None:
    """(Worker) our engine through scripts/segment.py; prints a JSON line with the peak RSS of its processes."""
    timing = _ours(volume, checkpoint, output, int(nproc), ["--block-shape", str(block_shape), "--backend", backend])
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
        "# Inference benchmark",
        "",
        f"Volume {meta['volume']} ({' x '.join(map(str, meta['shape']))} = {meta['voxels'] / 1e6:.1f} Mvox), "
        f"bundle network (2D U-Net), roi {ROI[0]}x{ROI[1]}, overlap {OVERLAP}, Gaussian blending, "
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
    return "\n".join(lines) + "\n"


def run(
    volume: str | None = None, checkpoint: str | None = None, sections: int = 16, pixels: int = 1024, repeats: int = 2, out_dir: str = str(RESULTS)
) -> list[dict]:
    """Plain MONAI vs ours (1 and 2 processes) on one volume, ``repeats`` interleaved rounds (fastest kept)."""
    import zarr

    from custom.data.lazy import open_volume

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        name = Path(volume).name if volume else "synthetic (source microscope)"
        if volume is None:
            volume = str(tmp_path / "synthetic.tif")
            _synthetic_volume(Path(volume), sections, pixels)
        checkpoint = checkpoint or _random_checkpoint(tmp_path / "model.pt")
        shape = open_volume(volume).shape
        n = int(np.prod(shape))
        variants = {"plain MONAI (SliceInferer, whole volume)": ("monai_baseline", str(tmp_path / "monai_mask.npy"), None)}
        for nproc, backend in ((1, "torch"), (2, "torch"), (1, "onnxruntime"), (2, "onnxruntime")):
            name = f"ours, {nproc} process{'es' if nproc > 1 else ''}, {backend}"
            variants[name] = ("ours_worker", str(tmp_path / f"ours{nproc}{backend}.zarr"), [str(nproc), backend])
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for _ in range(repeats):  # interleaved, so drifting machine load affects every variant alike
            for name, (worker, output, args) in variants.items():
                runs[name].append(_run_worker(worker, volume, checkpoint, output, *(args or [])))
        reference = np.load(tmp_path / "monai_mask.npy")
        rows = []
        for name, (worker, output, _) in variants.items():
            mask = reference if worker == "monai_baseline" else zarr.open_group(output, mode="r")["labels/mask/0"][...]
            best = min(runs[name], key=lambda r: r["seconds"])
            rows.append({"variant": name, **best, "all_seconds": [r["seconds"] for r in runs[name]], "mask_diff": int((mask != reference).sum())})
    for row in rows:
        row["voxels_per_s"] = n / row["seconds"]
        row["speedup"] = rows[0]["seconds"] / row["seconds"]
    meta = {"repeats": repeats, "volume": name, "shape": list(shape), "voxels": n, "cpu_count": os.cpu_count(), "torch": torch.__version__, "platform": platform.platform()}
    text = _markdown(rows, meta)
    print(text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference_benchmark.md").write_text(text)
    (out / "inference_benchmark.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
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
    fire.Fire({"run": run, "large": large, "monai_baseline": monai_baseline, "ours_worker": ours_worker})
