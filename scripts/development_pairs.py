"""Development pairs for label-free selection: a benchmark direction's candidates on its target re-imaged.

    python scripts/development_pairs.py run --budget cpu_fair --seeds 1       # then model_selection.py validate

Two real directions are too few to choose a selection rule on one and judge it on another. A
development pair keeps the content real and changes the imaging: the target's training and test
regions of a prepared direction are re-imaged (``custom.data.Reimaging``: pixel size, blur,
contrast, gamma, noise; labels resampled) by each pre-registered ``SHIFTS`` entry, and every
unsupervised candidate the benchmark trained for that direction and seed is deployed there as a
user would deploy it: trained models as they are, AdaBN / TENT re-adapted on the re-imaged target.
Each candidate's label-free scores (the unlabelled re-imaged training region) and target-test
metrics (the re-imaged test labels) become a cell of ``results/runs/<budget>_development/
<direction>@<shift>/<row>/seed<k>.json``, which ``model_selection.py validate`` reads beside the
real cells. The models were adapted to the original target, not the re-imaged one: the pairs ask
whether a score ranks a given set of models on a target, not how well a method adapts to it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import fire
import label_free
from benchmark_common import DEVELOPMENT_SUFFIX as SUFFIX
from benchmark_common import RESULTS, REPO, TRAINED_MARKER, chosen, is_candidate, worker_env, write_result
from model_selection import record_pair_scores
from recipes import BUDGETS, Recipe, RecipeRun, chain, load_recipes

from custom.data import Reimaging, load_datalist
from custom.utils import atomic_path, git_commit

# Pre-registered (in the commit that introduced them, before any development result): one shift
# coarser, blurrier and flatter than the target, one finer, brighter and noisier
SHIFTS = {
    "coarse_flat": Reimaging(pixel_size_factor=1.6, blur_nm=8.0, contrast=0.7, gamma=1.2, noise=0.02),
    "fine_noisy": Reimaging(pixel_size_factor=0.8, contrast=1.1, gamma=0.7, noise=0.08),
}
DIRECTIONS = ("vnc_to_fafb", "fafb_to_vnc")
TARGET_KEYS = ("target_training", "target_test")


def pair_name(direction: str, shift: str) -> str:
    """``vnc_to_fafb@coarse_flat``: the development pair of ``direction`` under ``shift``."""
    return f"{direction}@{shift}"


def build_dataset(prepared: Path, shift: str, out: Path) -> Path:
    """A copy of the prepared direction ``prepared`` whose target training and test regions are re-imaged
    by ``SHIFTS[shift]`` (``prepare_data.py reimage``, kept when done); source entries are unchanged."""
    from prepare_data import reimage

    change = vars(SHIFTS[shift])
    datalist = json.loads((prepared / "datalist.json").read_text())
    entries = {
        key: [{field: str(Path(path).resolve()) for field, path in entry.items()} for entry in load_datalist(prepared, key, required=key in TARGET_KEYS)]
        for key in ("training", "validation", *TARGET_KEYS)
    }  # absolute: the copy lies elsewhere
    for key in TARGET_KEYS:
        moved = []
        for i, entry in enumerate(entries[key]):
            folder = Path(reimage(entry["image"], str(out / "volumes" / f"{key}_{i}"), labels=entry["label"], seed=i, **change))
            moved.append({"image": str((folder / "image.tif").resolve()), "label": str((folder / "label.tif").resolve())})
        entries[key] = moved
    # the inference configs' default input: the re-imaged training region (its labels left out)
    volumes = [{"image": e["image"]} for e in entries["target_training"]]
    record = {**{k: v for k, v in datalist.items() if k not in ("target_volumes", *entries)}, **entries, "target_volumes": volumes, "shift": {shift: change}}
    with atomic_path(out / "datalist.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return out


def run(
    budget: str = "cpu_fair",
    seeds: int | tuple = 1,
    directions: str | tuple = DIRECTIONS,
    shifts: str | tuple = tuple(SHIFTS),
    work_dir: str = "runs/benchmark_da",
    runs_dir: str = str(RESULTS / "runs"),
    threads: int = 1,
    device: str = "cpu",
) -> list[dict]:
    """Score and evaluate every cached unsupervised candidate of ``budget`` on each development pair
    (seeds ``0..seeds-1`` or a list); cached development cells are kept. Ends by writing each complete
    pair's consensus into its cells (``record_pair_scores``): the work folder does not outlive the session."""
    if budget not in BUDGETS or "patch_z" in BUDGETS[budget]:
        raise SystemExit(f"budget must be a 2D benchmark budget, got {budget!r}.")
    seed_list = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
    shift_list, direction_list = chosen(shifts, SHIFTS, "shift"), chosen(directions, DIRECTIONS, "direction")
    work, runs = Path(work_dir), Path(runs_dir)
    prepared = work / "prepared"
    if not (prepared / "prepared.json").exists():
        raise SystemExit(f"{prepared} is not prepared; run the benchmark first (python scripts/benchmark_da.py run --budget {budget}).")
    recipes, env = load_recipes(), worker_env(threads, device)
    cells = []
    for direction in direction_list:
        for shift in shift_list:
            dataset = build_dataset(prepared / direction, shift, work / f"{budget}{SUFFIX}" / "prepared" / pair_name(direction, shift))
            for seed in seed_list:
                for cell in _candidates(runs / budget / direction, seed):
                    cells.append(_run_cell(cell, recipes, dataset, shift, budget, work, runs, device, env, threads))
    record_pair_scores(runs, work, budget)
    return cells


def _candidates(direction_runs: Path, seed: int) -> list[dict]:
    """The direction's cached cells of ``seed`` that ``model_selection.py`` counts as candidates (those with scores)."""
    found = [json.loads(p.read_text()) for p in sorted(direction_runs.glob(f"*/seed{seed}.json"))]
    return [c for c in found if c.get("label_free") and is_candidate(c)]


def _run_cell(cell: dict, recipes: dict[str, Recipe], dataset: Path, shift: str, budget: str, work: Path, runs: Path, device: str, env: dict, threads: int) -> dict:
    """One candidate on one development pair: deploy, score, evaluate; the cached cell when it exists."""
    direction, row, seed = cell["direction"], recipes[cell["row"]], cell["seed"]
    pair = pair_name(direction, shift)
    out = runs / f"{budget}{SUFFIX}" / pair / row.name / f"seed{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    trained = {r.name: work / budget / direction / r.name / f"seed{seed}" for r in chain(recipes, row.name) if r.train}
    missing = [name for name, root in trained.items() if not (root / TRAINED_MARKER).exists()]
    if missing:
        raise SystemExit(f"{direction}/{row.name}/seed{seed}: the benchmark's trainings {missing} are not under {work / budget}; run the benchmark first.")
    start = time.time()
    root = work / f"{budget}{SUFFIX}" / pair
    run_ = RecipeRun(
        recipes, dataset, BUDGETS[budget], seed, lambda name: root / name / f"seed{seed}", env=env,
        given={name: path / "models" / "model_final.pt" for name, path in trained.items()},
    )
    cell_root = root / row.name / f"seed{seed}"
    print(f"  {pair}/{row.name}/seed{seed}", flush=True)
    metrics = run_.evaluate(row, run_.checkpoint(row), cell_root / "eval_last", "eval_last")
    folder = cell_root / "label_free"
    scores = label_free.scores(label_free.deploy(run_, row, folder), folder, *label_free.regions(dataset), run_.bundle, device)
    result = {
        "direction": pair,
        "real_direction": direction,
        "shift": {shift: vars(SHIFTS[shift])},
        "row": row.name,
        "kind": row.kind,
        "seed": seed,
        "budget": {"name": budget, **BUDGETS[budget]},
        "revisions": cell.get("revisions"),
        "metrics_last": metrics,
        "label_free": scores,
        "wall_s": round(time.time() - start, 1),
        "device": device,
        "threads": threads,
        "commit": git_commit(REPO),
    }
    write_result(out, result)
    print(f"  {pair}/{row.name}/seed{seed}: IoU {metrics['iou']:.3f} ({result['wall_s']:.0f} s)", flush=True)
    return result


if __name__ == "__main__":
    fire.Fire({"run": run})
