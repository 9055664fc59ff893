"""Cost of one training iteration: supervised vs each domain-adaptation method, side by side.

    python scripts/benchmark_training.py run --iterations 20 --patch 256 --batch 4

Each method runs in its own process (so its peak RSS is its own) through the same
``DomainAdaptationTrainer`` and U-Net the bundle uses, on random patches of the given size. Prints a
table and writes ``results/training_benchmark.{md,json}``.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import fire
import torch
from ignite.engine import Events

RESULTS = Path(__file__).resolve().parents[1] / "results"
METHODS = ("supervised", "mmd", "coral", "dann", "ynet", "two_stream", "self_training", "consistency")
CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "em_mitochondria" / "configs"


def _student_transform():
    """The student's perturbation exactly as ``da/consistency.json`` declares it."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "da" / "self_training.json"), str(CONFIGS / "da" / "consistency.json")])
    return parser.get_parsed_content("adaptation#student_transform")


def _objective(method: str, network):
    from custom import engines

    return {
        "supervised": lambda: None,
        "mmd": lambda: engines.mmd_alignment([0.0, 0.0, 1.0, 1.0]),
        "coral": lambda: engines.coral_alignment([0.0, 0.0, 10.0, 10.0]),
        "dann": lambda: engines.DomainAdversarial(network, [0.0, 0.0, 0.1, 0.1]),
        "ynet": lambda: engines.Reconstruction(network),
        "two_stream": lambda: engines.TwoStream(network, alignment=engines.mmd_alignment([0.0, 0.0, 1.0, 1.0])),
        "self_training": lambda: engines.MeanTeacher(),
        "consistency": lambda: engines.MeanTeacher(student_transform=_student_transform()),
    }[method]()


def one(method: str, iterations: int = 20, warmup: int = 3, patch: int = 256, batch: int = 4, device: str = "cpu") -> dict:
    """Time ``iterations`` iterations of ``method`` in this process; returns s/iter and peak RSS."""
    from monai.losses import DiceCELoss

    from custom.engines import DomainAdaptationTrainer, trainable_parameters
    from custom.networks import UNet

    torch.manual_seed(0)
    network = UNet(2, channels=(16, 32, 64, 128)).to(device)
    objective = _objective(method, network)
    shape = (batch, 1, patch, patch)
    source = [{"image": torch.randn(shape), "label": (torch.rand(shape) > 0.9).float()} for _ in range(4)]
    target = [{"image": torch.randn(shape)} for _ in range(4)]
    trainer = DomainAdaptationTrainer(
        device=torch.device(device),
        max_epochs=1,
        epoch_length=warmup + iterations,
        train_data_loader=source,
        network=network,
        optimizer=torch.optim.Adam(trainable_parameters(network, objective), lr=1e-4),
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
        target_data_loader=target if objective is not None else None,
        adaptation=objective,
        decollate=False,
    )
    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stamps.append(time.perf_counter()))
    trainer.run()
    timed = stamps[warmup:]
    seconds = (timed[-1] - stamps[warmup - 1]) / len(timed)
    return {"method": method, "s_per_iter": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(iterations: int = 20, patch: int = 256, batch: int = 4, device: str = "cpu", out: str = str(RESULTS)) -> None:
    """Run every method in a subprocess, print the table, write ``training_benchmark.{md,json}``."""
    rows = []
    for method in METHODS:
        cmd = [sys.executable, __file__, "one", method, f"--iterations={iterations}", f"--patch={patch}", f"--batch={batch}", f"--device={device}"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    base = rows[0]["s_per_iter"]
    for row in rows:
        row["ratio_to_supervised"] = row["s_per_iter"] / base
    header = "| method | s/iter | × supervised | peak RSS (MB) |\n|---|---|---|---|\n"
    table = header + "".join(
        f"| {r['method']} | {r['s_per_iter']:.3f} | {r['ratio_to_supervised']:.2f} | {r['peak_rss_mb']:.0f} |\n" for r in rows
    )
    setup = f"{batch} × {patch}² patches, U-Net 16-128, {iterations} timed iterations, {device}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    print(setup)
    print(table)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "training_benchmark.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))
    (out_dir / "training_benchmark.md").write_text(f"# Training iteration cost\n\n{setup}\n\n{table}")


if __name__ == "__main__":
    fire.Fire({"run": run, "one": lambda *a, **k: print(json.dumps(one(*a, **k)))})
