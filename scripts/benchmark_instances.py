"""Instance segmentation benchmark: seeded watershed vs connected components, through the bundle.

    python scripts/benchmark_instances.py run --data-dir ../shared/data          # CPU budget, resumable
    python scripts/benchmark_instances.py run --data-dir ../shared/data --quick  # smoke run
    python scripts/benchmark_instances.py report                                 # table from the cache

Data sets: DSB 2018 nuclei (80/20 train/test by id, 10 % of training ids for validation) and the
mitochondria of Drosophila VNC and FAFB (connected components of the masks as instances, sections
split into training / validation / test, in-plane downsampled 2x). For each data set and seed one
``nuclei_instances`` model is trained with ``python -m monai.bundle run`` (checkpoint selected on
validation AP), then evaluated on the test split twice — instances by seeded watershed on the
predicted distance map, and by connected components of the predicted foreground — so the two
post-processings see the same network. Each (data set, seed) result is cached as
``results/instance_runs/<budget>/<dataset>/seed<k>.json`` (commit them); ``report`` writes
``results/instance_benchmark.{md,json,png}``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import fire
import numpy as np
from benchmark_common import REPO, RESULTS, bar_chart, chosen, prepare, train_once, worker_env, write_result

from custom.utils import atomic_path, git_commit, run_bundle_logged

CONFIGS = REPO / "bundles" / "nuclei_instances" / "configs"
METHODS = ("watershed", "connected_components")
METRICS = ("ap", "ap50", "ap70", "precision70", "recall70", "f1_70", "splits", "merges")
# dataset -> (prepare_data.py command, folder of the datalist inside that command's output)
DATASETS = {"dsb2018_nuclei": ("nuclei", "."), "vnc_mito": ("mito_instances", "vnc"), "fafb_mito": ("mito_instances", "fafb")}
BUDGETS = {
    "cpu": {"patch": 128, "batch_size": 8, "max_epochs": 8, "iterations_per_epoch": 25, "val_interval": 2},
    "gpu": {"patch": 256, "batch_size": 16, "max_epochs": 40, "iterations_per_epoch": 50, "val_interval": 5},
    "quick": {"patch": 64, "batch_size": 2, "max_epochs": 1, "iterations_per_epoch": 3, "val_interval": 1},
}


def run_one(data_root: Path, root: Path, result_path: Path, dataset: str, seed: int, budget: str, env: dict) -> dict:
    """Train one model and evaluate both post-processings on the test split; cache and return the result."""
    if result_path.exists():
        return json.loads(result_path.read_text())
    b, start = BUDGETS[budget], time.time()
    patch = [b["patch"], b["patch"]]

    def train() -> None:
        print(f"  train {dataset}/seed{seed}", flush=True)
        run_bundle_logged(
            [CONFIGS / "train.json"], root, root / "logs" / "train.log", env=env, dataset_dir=str(data_root), seed=seed, patch_size=patch,
            batch_size=b["batch_size"], max_epochs=b["max_epochs"], iterations_per_epoch=b["iterations_per_epoch"],
            val_interval=b["val_interval"], resume=True,
        )

    train_once(root, dataset, b["max_epochs"], train)
    metrics = {}
    for method in METHODS:
        eval_dir = root / f"eval_{method}"
        run_bundle_logged(
            [CONFIGS / "inference.json", CONFIGS / "evaluate.json"], root, root / "logs" / f"eval_{method}.log", env=env,
            dataset_dir=str(data_root), roi_size=patch, instance_method=method, eval_dir=str(eval_dir),
        )
        metrics[method] = {k: json.loads((eval_dir / "metrics.json").read_text())["metrics"][k] for k in METRICS}
    result = {
        "dataset": dataset, "seed": seed, "budget": {"name": budget, **b}, "metrics": metrics,
        "wall_s": round(time.time() - start, 1), "commit": git_commit(REPO),
    }  # fmt: skip
    write_result(result_path, result)
    ws, cc = metrics["watershed"]["ap70"], metrics["connected_components"]["ap70"]
    print(f"  {dataset}/seed{seed}: AP70 watershed {ws:.3f}, connected components {cc:.3f} ({result['wall_s']:.0f} s)", flush=True)
    return result


def run(
    data_dir: str = "../shared/data",
    work_dir: str = "runs/benchmark_instances",
    datasets: str | tuple = tuple(DATASETS),
    seeds: int = 3,
    budget: str = "cpu",
    quick: bool = False,
    threads: int = 1,
) -> None:
    """Run every missing (dataset, seed), then write the report; ``--quick``: one seed, tiny budget."""
    budget = "quick" if quick else budget
    names = chosen(datasets, DATASETS, "dataset(s)")
    work = Path(work_dir)
    runs_dir = work / "quick_results" / "runs" if quick else RESULTS / "instance_runs" / budget
    env = worker_env(threads)
    prepared = {command: prepare(data_dir, work / "prepared" / command, command) for command in {DATASETS[n][0] for n in names}}
    for seed in range(1 if quick else seeds):
        for name in names:
            command, folder = DATASETS[name]
            root = work / budget / name / f"seed{seed}"
            run_one(prepared[command] / folder, root, runs_dir / name / f"seed{seed}.json", name, seed, budget, env)
    report(str(runs_dir), str(work / "quick_results") if quick else str(RESULTS))


def summarise(results: list[dict]) -> dict:
    """{dataset: {method: {metric: (mean, std, n)}}} over seeds."""
    table: dict = {}
    for dataset in sorted({r["dataset"] for r in results}):
        rows = [r for r in results if r["dataset"] == dataset]
        table[dataset] = {
            method: {m: (float(np.mean(v)), float(np.std(v)), len(v)) for m in METRICS for v in [[r["metrics"][method][m] for r in rows]]}
            for method in METHODS
        }
    return table


def _markdown(table: dict, budget: dict) -> str:
    lines = [
        "# Instance segmentation: seeded watershed vs connected components",
        "",
        "Written by `scripts/benchmark_instances.py report` from the cached runs; mean ± std over seeds (n).",
        f"Budget per model: {budget}. One `nuclei_instances` model per (data set, seed), checkpoint selected on validation AP;",
        "both post-processings are applied to the same predictions of the test split. AP follows the DSB 2018",
        "definition (TP / (TP + FP + FN) after one-to-one IoU matching), with counts pooled over test images; `ap` is the",
        "mean over IoU 0.5:0.95. Splits: true objects covered ≥ 50 % by two or more predictions' pieces; merges:",
        "predictions that swallow two or more true objects (each ≥ 50 % inside), summed over test images.",
        "",
        "| data set | instances by | AP 0.5:0.95 | AP50 | AP70 | P70 | R70 | F1 70 | splits | merges | n |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset, methods in table.items():
        for method, values in methods.items():
            cells = [f"{values[m][0]:.3f} ± {values[m][1]:.3f}" for m in METRICS[:6]] + [f"{values[m][0]:.1f}" for m in METRICS[6:]]
            lines.append(f"| {dataset} | {method.replace('_', ' ')} | " + " | ".join(cells) + f" | {values['ap'][2]} |")
    return "\n".join(lines) + "\n"


def report(runs_dir: str = str(RESULTS / "instance_runs" / "cpu"), out: str = str(RESULTS)) -> None:
    """Aggregate the cached runs into ``instance_benchmark.{md,json,png}`` under ``out``."""
    results = [json.loads(p.read_text()) for p in sorted(Path(runs_dir).glob("*/seed*.json"))]
    if not results:
        raise SystemExit(f"no cached runs under {runs_dir}; run `python scripts/benchmark_instances.py run` first")
    table = summarise(results)
    budget = results[0]["budget"]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "instance_benchmark.md", overwrite=True) as tmp:
        tmp.write_text(_markdown(table, budget))
    with atomic_path(out_dir / "instance_benchmark.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps({"budget": budget, "table": table, "runs": results}, indent=1))
    datasets = list(table)
    series = {method.replace("_", " "): [table[d][method]["ap70"][:2] for d in datasets] for method in METHODS}
    bar_chart(datasets, series, out_dir / "instance_benchmark.png", "Instances: watershed vs connected components", "AP at IoU 0.7 (test)")
    print(_markdown(table, budget))


if __name__ == "__main__":
    fire.Fire({"run": run, "report": report})
