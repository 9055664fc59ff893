"""Fine-tuning study: a VNC-trained mitochondria model adapted to FAFB with a few target labels.

    python scripts/finetune_study.py run --data-dir ../shared/data            # CPU budget, resumable
    python scripts/finetune_study.py run --data-dir ../shared/data --quick    # smoke run
    python scripts/finetune_study.py report                                   # tables + chart from the cache

One factor at a time around a baseline (Dice+CE, Adam, no weight decay, augmentation on, 100 % of
the FAFB training region's labels, initialised from the VNC source model): the loss (CE, Dice,
focal, Dice+CE), the optimiser (SGD with momentum 0.9 vs Adam), L2 weight decay (0 vs 1e-4),
augmentation (flips, rot90, intensity scale/shift, noise, contrast, elastic deformation — on vs
off; random cropping is how patches are drawn and stays), the amount of target labels (10, 50,
100 % of the training region, first part along x) and, for contrast, training from scratch on the
same labels. Everything runs through the ``em_mitochondria`` bundle (``da/finetune.json``; from
scratch: ``da/oracle.json``); the source model of each seed is the bundle's source-only training.
Metrics on the FAFB test region (last 33 % along x, never used for choices): mIoU and mDice
(background and foreground averaged, the bundle's ``miou`` / ``mdice``) and foreground IoU of the
last checkpoint; mean ± std over
seeds. Cached per (variant, seed) in ``results/finetune_runs/<budget>/`` with the domain pixel sizes
they were made at (cells and models made at others are never reused); ``report`` writes
``results/finetune_study.{md,json,png}``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import fire
import numpy as np
from benchmark_common import REPO, RESULTS, bar_chart, chosen, claim_model_dir, prepare, train_once, worker_env, write_result

from custom.data.datasets import mito_pair_spacing_nm
from custom.utils import atomic_path, git_commit, run_bundle_logged

CONFIGS = REPO / "bundles" / "em_mitochondria" / "configs"
DIRECTION = "vnc_to_fafb"
BUDGETS = {
    # pixel size (nm), square patch, batch; source pre-training and fine-tuning lengths (epochs x iterations)
    "cpu": {"pixel_size_nm": 10.0, "patch": 128, "batch_size": 4, "source_epochs": 20, "ft_epochs": 10, "iterations_per_epoch": 20},
    "gpu": {"pixel_size_nm": 5.0, "patch": 256, "batch_size": 8, "source_epochs": 60, "ft_epochs": 30, "iterations_per_epoch": 50},
    "quick": {"pixel_size_nm": 10.0, "patch": 64, "batch_size": 2, "source_epochs": 1, "ft_epochs": 1, "iterations_per_epoch": 3},
}
# Loss variants as overrides of the bundle's DiceCELoss (softmax, one-hot targets kept).
LOSSES = {
    "ce": {"loss#lambda_dice": 0.0},
    "dice": {"loss#lambda_ce": 0.0},
    "focal": {"loss#_target_": "DiceFocalLoss", "loss#lambda_dice": 0.0, "loss#gamma": 2.0},
}
AUGMENTATION_OFF = {f"train#augmentation#transforms#{i}#prob": 0.0 for i in range(1, 7)} | {"elastic_prob": 0.0, "contrast_prob": 0.0}
AUGMENTATION_ON = {"elastic_prob": 0.3, "contrast_prob": 0.3}
SGD = {"optimizer#_target_": "torch.optim.SGD", "optimizer#momentum": 0.9, "learning_rate": 0.01}


@dataclass(frozen=True)
class Variant:
    """One line of the study: its factor, the value shown, and bundle overrides beyond the baseline."""

    name: str
    factor: str
    value: str
    overrides: dict = field(default_factory=dict)
    pretrained: bool = True


VARIANTS = (
    Variant("baseline", "baseline", "Dice+CE, Adam, wd 0, aug on, 100 %, pretrained"),
    Variant("loss_ce", "loss", "CE", LOSSES["ce"]),
    Variant("loss_dice", "loss", "Dice", LOSSES["dice"]),
    Variant("loss_focal", "loss", "focal", LOSSES["focal"]),
    Variant("sgd", "optimiser", "SGD (momentum 0.9, lr 1e-2)", SGD),
    Variant("weight_decay", "weight decay", "L2 1e-4", {"optimizer#weight_decay": 1e-4}),
    Variant("no_augmentation", "augmentation", "off", AUGMENTATION_OFF),
    Variant("labels_10", "target labels", "10 %", {"target_label_fraction": 0.1}),
    Variant("labels_50", "target labels", "50 %", {"target_label_fraction": 0.5}),
    Variant("scratch", "initialisation", "from scratch (lr 1e-3)", {}, pretrained=False),
)
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}


class Study:
    """Runs and caches the (variant, seed) grid for one budget."""

    def __init__(self, data_root: Path, work_dir: Path, runs_dir: Path, budget: str, env: dict) -> None:
        self.data_root, self.work_dir, self.runs_dir = data_root, work_dir / budget, runs_dir
        self.budget_name, self.budget, self.env = budget, BUDGETS[budget], env
        self.spacing_nm = mito_pair_spacing_nm()

    def _common(self, seed: int) -> dict:
        b = self.budget
        return {"dataset_dir": str(self.data_root), "pixel_size_nm": b["pixel_size_nm"], "seed": seed}

    def _train(self, root: Path, configs: list[Path], epochs: int, overrides: dict) -> Path:
        """Train once (resuming an interrupted run; ``train_once``); return the last checkpoint."""
        b = self.budget

        def train() -> None:
            run_bundle_logged(
                configs, root, root / "logs" / "train.log", env=self.env, patch_size=[b["patch"]] * 2, batch_size=b["batch_size"],
                max_epochs=epochs, iterations_per_epoch=b["iterations_per_epoch"], val_interval=epochs, resume=True, **overrides,
            )

        train_once(root, root.parent.name, epochs, train)
        return root / "models" / "model_final.pt"

    def source_model(self, seed: int) -> Path:
        print(f"  source model seed{seed}", flush=True)
        return self._train(self.work_dir / "source" / f"seed{seed}", [CONFIGS / "train.json"], self.budget["source_epochs"], self._common(seed))

    def run_one(self, variant: Variant, seed: int) -> dict:
        out = self.runs_dir / variant.name / f"seed{seed}.json"
        if out.exists():
            cached = json.loads(out.read_text())
            if cached.get("spacing_nm") == self.spacing_nm:
                return cached
            print(f"  {variant.name}/seed{seed}: cached at other domain pixel sizes ({cached.get('spacing_nm')}), run again", flush=True)
        start, root = time.time(), self.work_dir / variant.name / f"seed{seed}"
        overrides = {**self._common(seed), **AUGMENTATION_ON, **variant.overrides}
        if variant.pretrained:
            configs = [CONFIGS / "train.json", CONFIGS / "da" / "finetune.json"]
            overrides["pretrained_checkpoint"] = str(self.source_model(seed))
        else:  # the oracle config trains on the target region's labels from a random initialisation
            configs = [CONFIGS / "train.json", CONFIGS / "da" / "oracle.json"]
        fraction = overrides.pop("target_label_fraction", 1.0)
        overrides["train#label_fraction" if not variant.pretrained else "target_label_fraction"] = fraction
        print(f"  fine-tune {variant.name}/seed{seed}", flush=True)
        checkpoint = self._train(root, configs, self.budget["ft_epochs"], overrides)
        eval_dir = root / "eval"
        run_bundle_logged(
            [CONFIGS / "inference.json", CONFIGS / "evaluate.json"], root, root / "logs" / "eval.log", env=self.env,
            dataset_dir=str(self.data_root), pixel_size_nm=self.budget["pixel_size_nm"], checkpoint=str(checkpoint), eval_dir=str(eval_dir),
            roi_size=[self.budget["patch"]] * 2,
        )
        metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
        result = {
            "variant": variant.name, "factor": variant.factor, "value": variant.value, "seed": seed,
            "overrides": {k: v for k, v in overrides.items() if k != "dataset_dir"}, "metrics": metrics,
            "budget": {"name": self.budget_name, **self.budget}, "spacing_nm": self.spacing_nm, "wall_s": round(time.time() - start, 1), "commit": git_commit(REPO),
        }  # fmt: skip
        write_result(out, result)
        print(f"  {variant.name}/seed{seed}: mIoU {result['metrics']['miou']:.3f}, IoU {metrics['iou']:.3f} ({result['wall_s']:.0f} s)", flush=True)
        return result


def run(
    data_dir: str = "../shared/data",
    work_dir: str = "runs/finetune_study",
    variants: str | tuple = tuple(VARIANT_BY_NAME),
    seeds: int = 3,
    budget: str = "cpu",
    quick: bool = False,
    threads: int = 1,
) -> None:
    """Run every missing (variant, seed), seed by seed, then write the report."""
    budget = "quick" if quick else budget
    names = chosen(variants, VARIANT_BY_NAME, "variant(s)")
    work = Path(work_dir)
    runs_dir = work / "quick_results" / "runs" if quick else RESULTS / "finetune_runs" / budget
    claim_model_dir(work / budget, mito_pair_spacing_nm())
    study = Study(prepare(data_dir, work / "prepared") / DIRECTION, work, runs_dir, budget, worker_env(threads))
    for seed in range(1 if quick else seeds):
        for name in names:
            study.run_one(VARIANT_BY_NAME[name], seed)
    report(str(runs_dir), str(work / "quick_results") if quick else str(RESULTS))


def summarise(results: list[dict]) -> list[dict]:
    """One row per variant (study order): mean ± std over seeds of mIoU, mDice and foreground IoU."""
    rows = []
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant.name]
        if runs:
            stats = {m: (float(np.mean(v)), float(np.std(v))) for m in ("miou", "mdice", "iou") for v in [[r["metrics"][m] for r in runs]]}
            rows.append({"variant": variant.name, "factor": variant.factor, "value": variant.value, "n": len(runs), **stats})
    return rows


def _markdown(rows: list[dict], budget: dict) -> str:
    lines = [
        "# Fine-tuning study: VNC-trained mitochondria model → FAFB with target labels",
        "",
        "Written by `scripts/finetune_study.py report` from the cached runs; mean ± std over seeds (n); FAFB test",
        "region (last 33 % along x), last checkpoint. One factor changed at a time from the baseline.",
        f"Budget: {budget}.",
        "",
        "| factor | value | mIoU | mDice | foreground IoU | n |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r[m][0]:.3f} ± {r[m][1]:.3f}" for m in ("miou", "mdice", "iou"))
        lines.append(f"| {r['factor']} | {r['value']} | {cells} | {r['n']} |")
    return "\n".join(lines) + "\n"


def report(runs_dir: str = str(RESULTS / "finetune_runs" / "cpu"), out: str = str(RESULTS)) -> None:
    """Aggregate the cached runs into ``finetune_study.{md,json,png}`` under ``out``."""
    cached = [json.loads(p.read_text()) for p in sorted(Path(runs_dir).glob("*/seed*.json"))]
    spacing_nm = mito_pair_spacing_nm()
    results = [r for r in cached if r.get("spacing_nm") == spacing_nm]
    if len(results) < len(cached):
        print(f"{len(cached) - len(results)} cached runs under {runs_dir} were made at other (or unrecorded) domain pixel sizes than {spacing_nm} (nm): left out.")
    if not results:
        raise SystemExit(f"no cached runs at the current domain pixel sizes under {runs_dir}; run `python scripts/finetune_study.py run` first")
    rows, budget = summarise(results), results[0]["budget"]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "finetune_study.md") as tmp:
        tmp.write_text(_markdown(rows, budget))
    with atomic_path(out_dir / "finetune_study.json") as tmp:
        tmp.write_text(json.dumps({"budget": budget, "rows": rows, "runs": results}, indent=1))
    labels = [f"{r['factor']}\n{r['value'].split(',')[0]}" for r in rows]
    series = {"mIoU": [r["miou"] for r in rows], "foreground IoU": [r["iou"] for r in rows]}
    bar_chart(labels, series, out_dir / "finetune_study.png", "Fine-tuning VNC → FAFB (mean ± std over seeds)", "FAFB test region")
    print(_markdown(rows, budget))


if __name__ == "__main__":
    fire.Fire({"run": run, "report": report})
