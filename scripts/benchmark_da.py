"""Real domain-adaptation benchmark: every method, both directions, several seeds, through the bundle.

    python scripts/benchmark_da.py run --data-dir ../shared/data            # the CPU budget, resumable
    python scripts/benchmark_da.py run --data-dir ../shared/data --quick    # ~10-minute smoke run
    python scripts/benchmark_da.py run --device cuda --budget gpu           # larger budget on a GPU
    python scripts/benchmark_da.py report                                   # tables + charts from the cache
    python scripts/benchmark_da.py choose                                   # rank UDA rows on the synthetic pair

Each (direction, row, seed) trains and evaluates with ``python -m monai.bundle run`` and the row's
override configs (``configs/da/*.json``); its metrics go to ``results/runs/<budget>/<direction>/
<row>/seed<k>.json`` as soon as it finishes, so an interrupted benchmark resumes where it stopped
(also on another machine: commit the JSON files). Models live under ``--work-dir`` (not committed);
a row that needs another row's model (fine-tuning, self-training, AdaBN) retrains it if missing.

Protocol (no target test labels anywhere): both volumes resampled to the budget's pixel size;
source split 80/20 along x (train/validation), target split 67/33 along x (training region,
unlabelled except for the oracle and the semi-supervised rows; test region). Fixed
hyper-parameters from ``configs/da`` (chosen on synthetic data). The reported checkpoint is the last
one; the checkpoint selected on source-validation IoU (label-free for the target) is reported beside it.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import fire
import label_free
import numpy as np
import torch
from benchmark_common import REPO, RESULTS, TRAINED_MARKER, bar_chart, check_model_dir, chosen, claim_model_dir, prepare, reproduces, worker_env, write_result
from model_selection import REPORT as SELECTION
from model_selection import BATCH_NORM_REPORT, BATCH_NORM_VARIANTS, SEED_METHODS, adapt_records, record_pair_scores
from recipes import BUDGETS, SCALE_MATCH_FILE, Recipe, RecipeRun, is_three_d, load_recipes, revisions, starts_from, upstream

from custom.data.datasets import mito_pair_spacing_nm
from custom.utils import atomic_path, git_commit

BUNDLE = REPO / "bundles" / "em_mitochondria"
DOCS = BUNDLE / "docs" / "README.md"
DOCS_START = "<!-- da_benchmark: start (written by scripts/benchmark_da.py report; do not edit by hand) -->"
DOCS_END = "<!-- da_benchmark: end -->"
SEEDS_REQUIRED = 3
DIRECTIONS = ("vnc_to_fafb", "fafb_to_vnc")
METRICS = ("iou", "dice", "precision", "recall")
LABEL_STATS = "da_label_stats.json"  # labelled foreground fraction per domain and split, beside the cached runs

SYNTHETIC = "synthetic"  # the development pair (custom.data.synthetic) on which label-free choices are made
SYNTHETIC_BUDGETS = ("synthetic", "development")  # budgets run on the synthetic pair, not on real data
DEVELOPMENT_SHIFT = 0.75  # the development pair's target microscope (shifted_target), fixed by the calibration of 28f3b72
CHOICE = "da_synthetic_choice.json"
ADAPT_RECORDS = "adapt"  # the recorded adapt.py runs (results/adapt/*.json), beside the cached runs
ERRORS = "da_errors_{direction}"  # where the overlay's models err (written by ``overlay``; + budget_stem, .json)
ERROR_BOUNDARY_PX = 5  # label-grid pixels (20 nm FAFB, 23 nm VNC) that count as a mitochondrion's boundary
ERROR_MISSED_COVERAGE = 0.2  # a true (predicted) object covered less than this is missed (false)


# The benchmark's grid, in the order of its tables: recipes of ``configs/pipelines`` (``scripts/recipes.py``)
BENCHMARK_ROWS = (
    "source_only",
    # trains twice the budget's epochs (its recipe's epochs_factor), as many iterations as a row that
    # starts from source-only has in all: trained for the budget's epochs only, the from-scratch
    # oracle fell below fine-tuned and even unsupervised rows FAFB -> VNC (results at 33f22dd)
    "oracle", "histogram_match", "adabn", "tent", "mmd", "coral",
    "dann",  # revision 2: the domain classifier lost its batch norm (#28)
    "class_mmd", "ynet",
    "two_stream",  # revision 2: shared, normalised decoder (#28)
    "randomize", "self_training", "randomize_self_training", "consistency", "adabn_consistency", "balanced_consistency",
    "tent_consistency", "adabn_balanced_consistency", "tent_balanced_consistency", "consistency_tta", "balanced_consistency_tta",
    "teacher_tta_balanced_consistency", "teacher_tta_balanced_consistency_tta", "balanced_consistency_round2",
    "ema_balanced_consistency", "ema_balanced_consistency_tta", "ema_consistency", "ema_consistency_tta",
    "scale_aug", "scale_aug_balanced_consistency", "scale_aug_balanced_consistency_tta",
    # object-scale matching: scale_match* search every candidate size (the first, pre-registered search),
    # oriented_scale_match* only the side the predicted object size points to
    "scale_match", "scale_match_consistency", "scale_match_balanced_consistency", "scale_match_tent_balanced_consistency",
    "oriented_scale_match", "oriented_scale_match_consistency", "oriented_scale_match_balanced_consistency",
    "oriented_scale_match_tent_balanced_consistency",
    "ft_10", "ft_100", "ynet_ft_10", "ynet_ft_100",
)
# The 3D variant (configs/train_3d.json), run under the ``cpu_3d`` budget and reported beside the 2D rows (#32)
THREE_D_ROWS = ("source_only_3d", "oracle_3d", "tent_balanced_consistency_3d")
THREE_D_BUDGET = "cpu_3d"
# The equal-budget grid (budget cpu_fair): bounds, the seed methods with separate, joint and
# domain-specific batch norm and with separate forwards + AdaBN at test, the test-time baselines and the best-known
# pipelines; every cell records its label-free scores
FAIR_ROWS = (
    "source_only", "source_only_continued", "oracle", "adabn", "tent", "mmd", "coral", "dann", "ynet", "two_stream",
    "mmd_joint", "coral_joint", "dann_joint", "ynet_joint", "consistency", "consistency_tta", "tent_balanced_consistency", "ft_10",
    "mmd_adabn", "coral_adabn", "dann_adabn", "ynet_adabn", "two_stream_adabn", "mmd_dsbn", "coral_dsbn", "dann_dsbn", "ynet_dsbn",
)  # fmt: skip
# The long grid (budget cpu_long): bounds, the seed methods (Y-Net also semi-supervised), fine-tuning,
# and the candidates of the per-target label-free pick
LONG_ROWS = (
    "source_only", "source_only_continued", "oracle", "adabn", "tent", "mmd", "coral", "dann", "ynet", "two_stream", "consistency", "tent_balanced_consistency",
    "ynet_ft_10", "ft_10", "ft_100",
)  # fmt: skip
DEFAULT_ROWS = {THREE_D_BUDGET: THREE_D_ROWS, "cpu_fair": FAIR_ROWS, "cpu_long": LONG_ROWS}  # other budgets: the main grid
RECIPES = load_recipes()
ROWS = tuple(RECIPES[name] for name in BENCHMARK_ROWS)
ROW_BY_NAME = {row.name: row for row in (*ROWS, *(RECIPES[name] for names in DEFAULT_ROWS.values() for name in names))}
MAIN_ROWS = tuple(row for row in ROWS if not row.exploratory)  # the default grid, whose seeds the goal counts
# "Best UDA" is chosen on the synthetic pair, never on real target labels (``choose``,
# results/da_synthetic_choice.json). History: self-training on CORAL first; then domain
# randomisation + self-training, declared before any real result of it existed; then TENT
# (test-time entropy minimisation on the source-only model), which ranks first once the test-time
# rows join the synthetic ranking, declared before any real TENT result existed (AdaBN's real
# results, about source-only level in both directions, were known then). Later candidates, each
# with its replacement rule fixed in a commit message before any of its results (consistency,
# adabn_consistency, balanced_consistency, tent_consistency, adabn_balanced_consistency) did not
# exceed TENT there; tent_balanced_consistency (TENT on the model of weak/strong consistency with an
# AdaBN teacher and class-balanced pseudo-labels) did (0.896 vs 0.872, both seeds) and was declared
# before any real result of it existed. Test-time augmentation on the consistency models and a
# flip-averaged teacher (consistency_tta, balanced_consistency_tta, teacher_tta_balanced_consistency;
# rule fixed in the commit message before any of their results) did not exceed it there, nor did
# the five rows the ranking had left out until it covered every unsupervised row (histogram_match,
# mmd, dann, ynet, two_stream; best Y-Net 0.816), nor the EMA teacher deployed in place of the student
# (ema_*) or scale augmentation of the source (scale_aug*; best 0.781), each pre-registered likewise. Object-scale
# matching on the declared pipeline (scale_match_tent_balanced_consistency, whole-range search, and
# oriented_scale_match_tent_balanced_consistency) was to replace it if it cost at most 0.01 there
# (rule fixed before its results): it cost 0.022 (0.874), so it did not. The FAFB pixel-size
# correction (4 -> 8 nm) changes only the real pair, so the declaration stands through it.
# Against the 40-epoch oracle that row closed < 50 % of the real gap in both directions, and the
# ranking above was made at 150 training iterations, where source-only finds almost nothing on the
# synthetic target (IoU 0.085), so no row that refines the source model's own predictions could rank.
# Rule fixed before any result of it (and after the real results, which favour plain consistency:
# disclosed in the report): rank again at the benchmark's training length (budget ``development``),
# seeds 0 and 1, over the unsupervised rows that have 3 real seeds in both directions; the top row
# replaces this declaration whatever it is, and the goal is judged on it. Stopped before any
# candidate's result: at that length too source-only found almost nothing there (seed 0: IoU 0.021),
# so the synthetic target, not the training length, keeps refinement rows from ranking. Superseding
# rule, fixed before any result of it: the target microscope moved towards the source
# (``choose --shift``, ``custom.data.shifted_target``), strength taken from 0.75, 0.5, 0.25 in that
# order: the first whose source-only target-test IoU (development budget, mean of seeds 0 and 1) is
# at least 0.25, the real pairs' lowest source-only level (FAFB -> VNC 0.248); only source-only runs
# before the strength is fixed. At that strength, the same ranking (same 23 candidates, seeds 0 and
# 1); its top row replaces this declaration whatever it is. If no strength qualifies, it stands.
# Outcome: 0.75 qualified (source-only 0.535 / 0.300); tent_balanced_consistency ranked first again
# (0.941; adabn_balanced_consistency and tent 0.917), while plain consistency fell below source-only
# there (0.150; with TTA 0.077): the declaration stands.
BEST_UDA = "tent_balanced_consistency"
ALIGNMENT_ROWS = ("adabn", "tent", "mmd", "coral", "dann")  # rows that match the domains' feature statistics as a whole
# The paired effects per budget (``budget_effects``): the room there is and the seed methods, on every budget run
EFFECT_BUDGETS = ("cpu", "cpu_fair", "cpu_long", "gpu")
EFFECTS_CHART = "da_budget_effects"  # the bars of ``budget_effects``, beside the report
CONTINUED = "source_only_continued"  # the equal-training control of rows that start from the source-only model
EFFECT_ROWS = ("oracle", *SEED_METHODS)
# The rows of the bundle README's short table at the cpu budget: bounds, the test-time baselines, plain
# consistency with and without TTA, the declared label-free row and fine-tuning (the seed methods are in
# its table of every budget, ``budget_effects``); every row is in results/da_benchmark.md
BRIEF_ROWS = ("source_only", "oracle", "adabn", "tent", "consistency", "consistency_tta", BEST_UDA, "ft_10", "ft_100")
# The rows of each direction's main table in the main grid's report: bounds, the test-time baselines, the seed methods
# (Y-Net also semi-supervised), plain consistency with and without TTA, the declared row and fine-tuning. The grid's
# other rows follow in an appendix; a budget with its own grid (``DEFAULT_ROWS``) shows all of it.
TABLE_ROWS = ("source_only", "oracle", "adabn", "tent", *SEED_METHODS, "consistency", "consistency_tta", BEST_UDA, "ft_10", "ft_100", "ynet_ft_10")


def _direction_title(direction: str) -> str:
    """``vnc_to_fafb`` as the report writes it: ``VNC → FAFB``."""
    return direction.replace("_to_", " → ").upper()


def run_root(budget_dir: Path, direction: str, row: str, seed: int) -> Path:
    """The bundle root of one (direction, row, seed) cell under a budget's work directory."""
    return budget_dir / direction / row / f"seed{seed}"


def last_model(budget_dir: Path, direction: str, row: str, seed: int) -> Path:
    """Where a cell's training writes its last checkpoint (it may not exist yet)."""
    return run_root(budget_dir, direction, row, seed) / "models" / "model_final.pt"


class Benchmark:
    """Runs and caches the (direction, row, seed) grid for one budget."""

    def __init__(self, data_root: Path, work_dir: Path, runs_dir: Path, budget: str, device: str, threads: int) -> None:
        if budget not in BUDGETS:
            raise SystemExit(f"unknown budget {budget!r}; choose from {sorted(BUDGETS)}.")
        self.data_root, self.work_dir, self.runs_dir = data_root, work_dir / budget, runs_dir / budget
        self.budget_name, self.budget = budget, BUDGETS[budget]
        self.device = device
        self.threads = threads
        self.env = worker_env(threads, device)
        self.spacing_nm = None if budget in SYNTHETIC_BUDGETS else mito_pair_spacing_nm()  # recorded in each real-data cell
        self.verified: set[tuple[str, str, int]] = set()  # (direction, row, seed) whose model here is the one its cell measured

    def result_path(self, direction: str, row: Recipe, seed: int) -> Path:
        return self.runs_dir / direction / row.name / f"seed{seed}.json"

    def run_root(self, direction: str, row: Recipe, seed: int) -> Path:
        return run_root(self.work_dir, direction, row.name, seed)

    def eval_dir(self, direction: str, row: Recipe, seed: int, name: str) -> Path:
        """Where ``_evaluate`` writes the evaluation ``name`` (``last``, ``selected``, ``start``) of a cell."""
        return self.run_root(direction, row, seed) / f"eval_{name}"

    def last_model(self, direction: str, row: Recipe, seed: int) -> Path:
        """Where ``row``'s training writes its last checkpoint (it may not exist yet)."""
        return last_model(self.work_dir, direction, row.name, seed)

    def recipe_run(self, direction: str, seed: int) -> RecipeRun:
        """The recipes' shared training and evaluation (``scripts/recipes.py``) for one direction and seed."""
        return RecipeRun(
            RECIPES, self.data_root / direction, self.budget, seed, lambda name: run_root(self.work_dir, direction, name, seed),
            env=self.env, unrecorded_epochs=self.budget["max_epochs"],
        )

    def _checkpoint(self, direction: str, row: Recipe, seed: int) -> Path:
        """The last checkpoint of ``row``, training (or resuming) it first unless its training finished
        (``train_once``: a finished training of other epochs than the row's is refused)."""
        return self.recipe_run(direction, seed).checkpoint(row)

    def _check_upstream(self, direction: str, row: Recipe, seed: int) -> None:
        """Refuse ``row`` when a row its model builds on (``upstream``) has a cached cell measured on
        another model than the one this work folder holds: CPU training does not repeat across
        machines, so a model trained again elsewhere is another model, and the grid's paired
        differences would silently mix the two. The model here is the cell's when its evaluation
        here gives the cell's metrics (kept from the cell's own run, else measured now)."""
        for start in upstream(RECIPES, row, self.budget):
            path = self.result_path(direction, start, seed)
            if (direction, start.name, seed) in self.verified or not path.exists():
                continue
            recorded = json.loads(path.read_text())["metrics_last"]
            kept = self.eval_dir(direction, start, seed, "last") / "metrics.json"
            if not (kept.exists() and reproduces(json.loads(kept.read_text())["metrics"], recorded)):
                measured = self._evaluate(direction, start, seed, self._checkpoint(direction, start, seed), "last")
                if not reproduces(measured, recorded):
                    raise SystemExit(
                        f"{direction}/{row.name}/seed{seed} builds on {start.name}, whose model here (IoU {measured['iou']:.4f}) is not the one its "
                        f"cached cell measured (IoU {recorded['iou']:.4f}): trained again on another machine, it is another model. Train a seed's "
                        f"rows in one work folder: move {path.parent.parent}/*/seed{seed}.json away to run the whole seed again, or leave {row.name} out."
                    )
            self.verified.add((direction, start.name, seed))

    def _evaluate(self, direction: str, row: Recipe, seed: int, checkpoint: Path, name: str) -> dict:
        return self.recipe_run(direction, seed).evaluate(row, checkpoint, self.eval_dir(direction, row, seed, name), f"eval_{name}")

    def label_free_dir(self, direction: str, row: Recipe, seed: int) -> Path:
        """Where a cell's deployed model and its target-region / source-validation segmentations are kept."""
        return self.run_root(direction, row, seed) / "label_free"

    def _label_free(self, direction: str, row: Recipe, seed: int) -> dict | None:
        """The row's label-free scores on the direction's unlabelled target training region (the ones
        ``adapt.py`` computes; consensus, which needs the other rows, is computed from the kept
        segmentations by ``model_selection.py validate``); None for rows that cannot be deployed."""
        if not label_free.deployable(row):
            return None
        run, folder = self.recipe_run(direction, seed), self.label_free_dir(direction, row, seed)
        return label_free.scores(label_free.deploy(run, row, folder), folder, *label_free.regions(run.dataset_dir), run.bundle, self.device)

    def run_one(self, direction: str, row: Recipe, seed: int) -> dict:
        """Train (if the row trains) and evaluate one cell; write and return its cached result."""
        out = self.result_path(direction, row, seed)
        if out.exists():
            cached = json.loads(out.read_text())
            stale = _stale_reason(cached, mito_pair_spacing_nm())
            if stale is None:
                return cached
            print(f"  {direction}/{row.name}/seed{seed}: cached cell {stale}; run again", flush=True)
        self._check_upstream(direction, row, seed)
        start = time.time()
        last = self._checkpoint(direction, row, seed)
        models = last.parent
        metrics_last = self._evaluate(direction, row, seed, last, "last")
        selected = models / "model.pt"
        metrics_selected = self._evaluate(direction, row, seed, selected, "selected") if row.train and selected.exists() else metrics_last
        # the model this row started from, measured here when its training finished on this machine
        # (never retrained just for this): a pretrained row's model may have been retrained since its
        # own row was cached, and CPU training repeats only at equal thread count
        start_name = starts_from(row, self.budget) if row.train else None
        start_row = RECIPES[start_name] if start_name else None
        start_done = start_row is not None and (self.run_root(direction, start_row, seed) / TRAINED_MARKER).exists()
        metrics_start = self._evaluate(direction, row, seed, self.last_model(direction, start_row, seed), "start") if start_done else None
        result = {
            "direction": direction,
            "row": row.name,
            "kind": row.kind,
            "seed": seed,
            "budget": {"name": self.budget_name, **self.budget},
            "epochs": row.epochs(self.budget) if row.train else None,
            "configs": list(row.configs) + list(row.eval_configs),
            "overrides": row.overrides,
            "pretrained": row.pretrained,
            "revisions": revisions(RECIPES, row.name),
            "spacing_nm": self.spacing_nm,
            "metrics_last": metrics_last,
            "metrics_source_val_selected": metrics_selected,
            "metrics_start": metrics_start,
            "scale_match": _scale_match_choice(self.eval_dir(direction, row, seed, "last") / SCALE_MATCH_FILE),
            "label_free": self._label_free(direction, row, seed),
            "wall_s": round(time.time() - start, 1),
            "device": self.device,
            "threads": self.threads,
            "machine": platform.machine(),
            "commit": git_commit(REPO),
        }
        write_result(out, result)
        print(f"  {direction}/{row.name}/seed{seed}: IoU {metrics_last['iou']:.3f} ({result['wall_s']:.0f} s)", flush=True)
        return result


def run(
    data_dir: str = "../shared/data",
    seeds: int | tuple = 3,
    rows: str | tuple = "",
    directions: str | tuple = DIRECTIONS,
    budget: str = "cpu",
    quick: bool = False,
    device: str = "cpu",
    threads: int = 2,
    work_dir: str = "runs/benchmark_da",
    runs_dir: str = str(RESULTS / "runs"),
) -> None:
    """Run every missing (direction, row, seed) of the grid, write each complete pair's consensus into
    its cells (``record_pair_scores``), then write the report.

    ``seeds``: a count (0..n-1) or a tuple of seeds; ``rows``/``directions``: restrict the grid
    (by default every row but the exploratory ones, which run only when named here);
    ``quick``: the ``quick`` budget, one seed, one direction unless given, results under ``work_dir`` (not the committed cache).
    """
    if budget in SYNTHETIC_BUDGETS:
        real = ", ".join(b for b in BUDGETS if b not in SYNTHETIC_BUDGETS)
        raise SystemExit(f"budget {budget!r} trains on the synthetic pair: use `choose --budget {budget}`; real-data budgets: {real}.")
    if quick:
        budget, seeds, runs_dir = "quick", (0,), str(Path(work_dir) / "quick_results")
        directions = directions if directions != DIRECTIONS else DIRECTIONS[:1]
    seed_list = _seed_list(seeds)
    row_names = (rows,) if isinstance(rows, str) and rows else tuple(rows or ())
    direction_list = (directions,) if isinstance(directions, str) else tuple(directions)
    for name, known in [*((r, ROW_BY_NAME) for r in row_names), *((d, DIRECTIONS) for d in direction_list)]:
        if name not in known:
            raise SystemExit(f"unknown row or direction {name!r}; choose from {', '.join(known)}.")
    three_d = "patch_z" in BUDGETS[budget]
    default = DEFAULT_ROWS.get(budget, [r.name for r in MAIN_ROWS])
    row_list = [ROW_BY_NAME[r] for r in row_names] or [ROW_BY_NAME[r] for r in default]
    mismatched = [r.name for r in row_list if is_three_d(RECIPES, r.name) != three_d]
    if mismatched:
        raise SystemExit(f"rows {mismatched} are {'2D' if three_d else '3D'}, budget {budget!r} is {'3D' if three_d else '2D'}; 3D rows run under a budget with patch_z (cpu_3d).")
    spacing_nm = mito_pair_spacing_nm()
    claim_model_dir(Path(work_dir) / budget, spacing_nm)
    prepared = prepare(data_dir, Path(work_dir) / "prepared")
    write_label_stats(prepared, Path(runs_dir).parent / LABEL_STATS)
    bench = Benchmark(prepared, Path(work_dir), Path(runs_dir), budget, device, threads)
    for seed in seed_list:
        for direction in direction_list:
            for row in row_list:
                bench.run_one(direction, row, seed)
    record_pair_scores(Path(runs_dir), Path(work_dir), budget)  # the consensus needs the kept segmentations of this session's work folder
    out = str(Path(runs_dir).parent) if not quick else runs_dir
    if three_d:  # the 3D rows are a section of the 2D report
        report(runs_dir=runs_dir, out=out, docs=False)
        return
    report(runs_dir=runs_dir, budget=budget, out=out, docs=not quick)
    for direction in direction_list:
        overlay(direction, seed=seed_list[0], budget=budget, work_dir=work_dir, runs_dir=runs_dir, out=out)


def choose(
    seeds: int | tuple = 1,
    rows: str | tuple = (),
    budget: str = "development",
    shift: float = DEVELOPMENT_SHIFT,
    threads: int = 2,
    work_dir: str = "runs/benchmark_da",
    runs_dir: str = str(RESULTS / "runs"),
) -> None:
    """Rank unsupervised rows on the synthetic pair, whose target labels may be used: this is how the
    real benchmark's best UDA row (``BEST_UDA``) is chosen without real target labels.

    Same bundle path and caching as ``run``; ``budget``: ``development`` (the CPU budget's 400
    iterations of 4 × 128² patches) or ``synthetic`` (the demo's 150); ``shift``: the target
    microscope's strength (``custom.data.shifted_target``; 1 = the demo's pair, default the
    development pair's). Writes
    ``results/da_synthetic_choice.json`` with target-test IoU per row.
    ``rows``: by default source-only and every unsupervised row of ``ROWS`` but the exploratory ones.
    """
    if budget not in SYNTHETIC_BUDGETS:
        raise SystemExit(f"choose runs on the synthetic pair: budget must be one of {SYNTHETIC_BUDGETS}, got {budget!r}.")
    from custom.data import ensure_synthetic_dataset

    data_root = Path(work_dir) / "synthetic_data"
    pair = SYNTHETIC if shift == 1.0 else f"{SYNTHETIC}_shift{shift:g}"  # its own data, models and cached cells
    ensure_synthetic_dataset(data_root / pair, shift=shift)
    bench = Benchmark(data_root, Path(work_dir), Path(runs_dir), budget, "cpu", threads)
    seed_list = _seed_list(seeds)
    unsupervised = [r.name for r in MAIN_ROWS if r.kind == "uda" or r.name == "source_only"]
    row_list = [ROW_BY_NAME[name] for name in chosen(rows or unsupervised, unsupervised, "rows")]
    metrics = {row.name: [bench.run_one(pair, row, seed)["metrics_last"] for seed in seed_list] for row in row_list}
    ious = {name: [m["iou"] for m in runs] for name, runs in metrics.items()}
    uda = [name for name in ious if ROW_BY_NAME[name].kind == "uda"]
    result = {
        "budget": {"name": budget, **BUDGETS[budget]},
        "shift": shift,
        "seeds": list(seed_list),
        "target_test_iou": {name: {"mean": float(np.mean(v)), "per_seed": v} for name, v in ious.items()},
        # under- or over-segmentation of the synthetic target, to set beside the real pairs' (report)
        "target_test_predicted_to_true_foreground": {
            name: predicted_to_true_foreground(np.mean([m["precision"] for m in runs]), np.mean([m["recall"] for m in runs])) for name, runs in metrics.items()
        },
        "best_uda": max(uda, key=lambda n: np.mean(ious[n])) if uda else None,
    }
    write_result(Path(runs_dir).parent / CHOICE, result)
    for name, v in ious.items():
        print(f"{name:<26} target-test IoU {np.mean(v):.3f}")
    print(f"best unsupervised row on the synthetic pair: {result['best_uda']}")


def write_label_stats(prepared: Path, path: Path) -> dict:
    """Fraction of labelled foreground pixels in every training split of each direction (source
    training, target training region), written as JSON: the class balance each domain shows the model."""
    from custom.data import load_datalist, read_label

    stats = {}
    for direction in DIRECTIONS:
        stats[direction] = {}
        for split in ("training", "target_training"):
            masks = [read_label(item["label"])[0] for item in load_datalist(prepared / direction, split)]
            stats[direction][split] = float(sum(int(m.sum()) for m in masks) / sum(m.size for m in masks))
    write_result(path, stats)
    return stats


def _read_beside_runs(runs_dir: str, name: str) -> dict:
    """A JSON file written next to the cached runs (label statistics, synthetic choice); {} if absent."""
    path = Path(runs_dir).parent / name
    return json.loads(path.read_text()) if path.exists() else {}


def _scale_match_choice(path: Path) -> dict | None:
    """The target pixel size a scale-matching evaluation chose (None for other rows)."""
    if not path.exists():
        return None
    match = json.loads(path.read_text())
    return {"pixel_size_nm": match["pixel_size_nm"], "factor": match["factor"]}


def predicted_to_true_foreground(precision: float, recall: float) -> float:
    """Predicted / true foreground pixels (= recall / precision): below 1 a model under-segments, above 1 over-segments."""
    return float(recall / max(precision, 1e-9))


def _cell_ratio(cell: dict) -> float:
    """``predicted_to_true_foreground`` of a table cell's mean precision and recall."""
    return predicted_to_true_foreground(cell["precision"]["mean"], cell["recall"]["mean"])


def _seed_list(seeds: int | tuple) -> tuple:
    """``seeds`` as given on the command line (a count 0..n-1 or the seeds themselves) as a tuple."""
    return tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)


def _stale_reason(cell: dict, spacing_nm: dict) -> str | None:
    """Why a cached cell may not be served (None if it may): a real-data cell made at other domain
    pixel sizes than ``spacing_nm``, or a cell trained for other epochs than its row trains now
    (cells from before epochs were recorded trained the budget's)."""
    if cell["direction"] in DIRECTIONS and cell.get("spacing_nm") != spacing_nm:
        return f"made at other domain pixel sizes ({cell.get('spacing_nm')} nm)"
    row = ROW_BY_NAME.get(cell["row"])
    if row is not None and cell.get("revisions", {}) != revisions(RECIPES, row.name):
        return f"made with other method revisions ({cell.get('revisions', {})}; now {revisions(RECIPES, row.name)})"
    if row is not None and row.train and "budget" in cell:
        trained = cell.get("epochs") or cell["budget"]["max_epochs"]
        if trained != row.epochs(cell["budget"]):
            return f"trained {trained} epochs, the row now trains {row.epochs(cell['budget'])}"
    return None


def _load(runs_dir: Path) -> list[dict]:
    """The cached cells under ``runs_dir`` that ``run`` would serve; the others (other domain pixel
    sizes, other epochs than the row trains now) are left out and counted, as ``run`` would run them again."""
    cells = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*/*/seed*.json"))]
    spacing_nm = mito_pair_spacing_nm()
    reasons = [_stale_reason(c, spacing_nm) for c in cells]
    stale = [r for r in reasons if r is not None]
    if stale:
        print(f"{len(stale)} cached cells under {runs_dir} left out (run would run them again), e.g. {stale[0]}.")
    return [c for c, r in zip(cells, reasons) if r is None]


def _gap_per_seed(iou: dict, low: dict, high: dict) -> dict:
    """Gap closed seed by seed, against the same seed's source-only and oracle (seeds that have all three)."""
    return {s: (iou[s] - low[s]) / (high[s] - low[s]) for s in sorted(iou) if s in low and s in high and high[s] > low[s]}


def _gap_closed(iou: dict, low: dict, high: dict) -> float | None:
    """Gap closed: the row's mean paired gain over source-only, over the seeds it shares with it, divided by
    the oracle's mean lead over source-only. The lead is taken over the same seeds where the oracle has them
    all, so that a seed one bound has and the row not yet (a grid still running) does not move it; a row run
    on seeds the oracle lacks (fine-tuning on later seeds) is divided by the lead over every seed both bounds
    share. None without such seeds or where the oracle is not above source-only."""
    paired = [s for s in iou if s in low]
    bounds = paired if all(s in high for s in paired) else [s for s in low if s in high]
    if not paired or not bounds:
        return None
    gain = float(np.mean([iou[s] - low[s] for s in paired]))
    lead = float(np.mean([high[s] - low[s] for s in bounds]))
    return gain / lead if lead > 0 else None


def summarise(results: list[dict], key: str = "metrics_last") -> dict:
    """Mean and std over seeds per (direction, row), plus the fraction of the source-only → oracle gap closed."""
    table: dict = {}
    for direction in DIRECTIONS:
        cells = {}
        for row in ROW_BY_NAME.values():
            runs = [r for r in results if r["direction"] == direction and r["row"] == row.name]
            if not runs:
                continue
            cell = {"n_seeds": len(runs), "seeds": sorted(r["seed"] for r in runs), "iou_per_seed": {r["seed"]: r[key]["iou"] for r in runs}}
            for metric in METRICS:
                values = np.array([r[key][metric] for r in runs], dtype=float)
                cell[metric] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
            cell["iou_source_val_selected"] = float(np.mean([r["metrics_source_val_selected"]["iou"] for r in runs]))
            if all(r.get("metrics_start") for r in runs):
                gains = np.array([r[key]["iou"] - r["metrics_start"]["iou"] for r in runs])
                cell["iou_start"] = float(np.mean([r["metrics_start"]["iou"] for r in runs]))
                cell["iou_gain_over_start"] = {"mean": float(gains.mean()), "std": float(gains.std(ddof=1)) if len(gains) > 1 else 0.0}
            cells[row.name] = cell
        low, high = cells.get("source_only"), cells.get("oracle")
        if low and high:
            for cell in cells.values():
                gap = _gap_closed(cell["iou_per_seed"], low["iou_per_seed"], high["iou_per_seed"])
                if gap is not None:
                    cell["gap_closed"] = gap
                    cell["gap_closed_per_seed"] = _gap_per_seed(cell["iou_per_seed"], low["iou_per_seed"], high["iou_per_seed"])
        if high:
            for cell in cells.values():
                if "iou_start" in cell and high["iou"]["mean"] > cell["iou_start"]:
                    cell["gap_closed_from_start"] = cell["iou_gain_over_start"]["mean"] / (high["iou"]["mean"] - cell["iou_start"])
        if cells:
            table[direction] = cells
    return table


def _markdown(table: dict, budget: dict, label_stats: dict, choice: dict, errors: list[dict] = (), scale_lines: list[str] = (), grid: Sequence[str] = ()) -> str:
    lines = [
        "# Domain-adaptation benchmark: EM mitochondria, Drosophila VNC ↔ FAFB",
        "",
        f"Budget per run: {budget['max_epochs']} epochs × {budget['iterations_per_epoch']} iterations of {budget['batch_size']} × "
        f"{budget['patch']}² patches, both volumes resampled to {budget['pixel_size_nm']:g} nm. Target test region = last 33 % "
        "of the target volume along x; metrics of the",
        "foreground class on it, mean ± std over seeds, **last checkpoint**; `sel.` = checkpoint chosen on",
        "source-validation IoU (no target labels). Gap closed = (method − source-only) / (oracle − source-only), means over the seeds the row shares with both "
        "(a row with seeds the oracle lacks: its paired gain over its seeds shared with source-only, divided by the oracle's lead over the seeds the bounds share); paired Δ =",
        "the row's IoU minus source-only's, seed by seed (mean ± std), and on how many seeds the row beats source-only.",
        *(
            ["The main tables show the bounds, the test-time baselines, the seed methods, plain consistency with and without TTA, the",
             "declared label-free row and fine-tuning; the grid's other rows are in an appendix, as are the exploratory rows (added",
             "beyond the issue's rows, run only when named with `run --rows`, never candidates for the label-free choice)."]
            if not grid else
            ["Exploratory rows (added beyond the issue's rows, run only when named with `run --rows`, never candidates",
             "for the label-free choice) are in the appendix at the end."]
        ),
        *(f"The {row.name} trains {row.epochs_factor} × as long ({row.epochs(budget)} epochs): as many iterations as a row that starts from source-only has in all." for row in ROWS if row.epochs_factor != 1),
        *(
            [f"Equal total training: every unsupervised row that would train from scratch starts from the same seed's {budget['adapt_from']} model "
             f"and trains the budget's iterations on top of it, as the rows that always started from it do; {CONTINUED}, the source-only "
             "model trained on as long without the target, is their baseline of equal total training (last column)."]
            if budget.get("adapt_from") else []
        ),
        "",
    ]
    tabled = set(grid) or set(TABLE_ROWS)
    for direction, cells in table.items():
        shown, hidden = _distinct_rows({n: c for n, c in cells.items() if n in tabled}, cells)
        control = cells.get(CONTINUED) if budget.get("adapt_from") else None
        lines += [f"## {_direction_title(direction)}", "", *_table_lines(shown, cells.get("source_only"), control), *hidden, ""]
    lines += ["## Status", ""] + _status(table, grid) + _choice_line(choice) + [""]
    disagreement = _disagreement_lines(table, choice, label_stats)
    if disagreement:
        lines += ["## Why the label-free choice and the test labels disagree", ""] + disagreement + [""]
    lines += ["## Why unsupervised rows fall below source-only", ""] + _diagnosis(table, label_stats) + [""]
    if errors:
        lines += [
            "## Where the errors are",
            "",
            "Models drawn in the overlays, target test region, with the thresholds each breakdown was computed with.",
            "",
        ]
        lines += [line for error_file in errors for line in _error_lines(error_file)] + [""]
    if scale_lines:
        lines += ["## Target pixel sizes chosen by scale matching", "", *scale_lines, ""]
    for direction, cells in table.items():
        shown, hidden = _distinct_rows({n: c for n, c in cells.items() if n not in tabled and not ROW_BY_NAME[n].exploratory}, cells)
        if shown:
            lines += [f"## Appendix: the grid's other rows, {_direction_title(direction)}", "", *_table_lines(shown, cells.get("source_only")), *hidden, ""]
        extra = {n: c for n, c in cells.items() if ROW_BY_NAME[n].exploratory}
        if extra:
            lines += [f"## Appendix: exploratory rows, {_direction_title(direction)}", "", *_table_lines(extra, cells.get("source_only")), ""]
    lines += [
        "Reference points on other data (not comparable): Roels et al. 2019, EPFL → VNC, IoU %: FT 28.70,",
        "MMD 44.96, CORAL 40.28, DANN 49.90, Y-Net 49.55; DA-ISC (Huang et al. 2022), VNC → EPFL: 68.65 / 74.31.",
        "",
    ]
    return "\n".join(lines)


def paired_deltas(cell: dict, source_only: dict | None) -> np.ndarray:
    """The row's target-test IoU minus source-only's, seed by seed, over the seeds both have."""
    if not source_only or cell is source_only:
        return np.array([])
    low = source_only["iou_per_seed"]
    return np.array([v - low[s] for s, v in cell["iou_per_seed"].items() if s in low])


def _format_deltas(deltas: Sequence[float], digits: int = 3) -> str:
    """``+0.120 ± 0.030 (3/3)``: paired differences as mean ± std and on how many seeds they are positive."""
    diffs = np.asarray(deltas, dtype=float)
    if diffs.size == 0:
        return "–"
    std = f" ± {diffs.std(ddof=1):.{digits}f}" if diffs.size > 1 else ""
    return f"{diffs.mean():+.{digits}f}{std} ({int((diffs > 0).sum())}/{diffs.size})"


def _paired_effect(cell: dict, source_only: dict | None) -> str:
    """The IoU difference from source-only seed by seed (``paired_deltas``), formatted by ``_format_deltas``."""
    return _format_deltas(paired_deltas(cell, source_only))


def equal_training_baseline(budget: str) -> str:
    """The row whose total training the seed methods' equals under ``budget``: source-only where they train
    from scratch, the source-only model trained on as long as they adapt where they start from it."""
    return CONTINUED if BUDGETS[budget].get("adapt_from") else "source_only"


def deployed_variants(batch_norm_modes: dict) -> dict[str, str]:
    """Each seed method's row as deployed: the variant of its label-free batch-norm default
    (``model_selection.py batch_norm_modes``' JSON; a method it does not name stays ``separate``)."""
    defaults = {method: m["default"] for method, m in batch_norm_modes.get("methods", {}).items()}
    return {method: method + BATCH_NORM_VARIANTS[defaults.get(method, "separate")] for method in SEED_METHODS}


def budget_effects(
    runs_dir: Path, budgets: Sequence[str] = EFFECT_BUDGETS, known: dict[str, dict] | None = None, deployed: dict[str, str] | None = None
) -> dict:
    """Per budget with cached cells and per direction: each of ``EFFECT_ROWS``' (and of the ``deployed_variants``')
    paired IoU difference from the budget's ``equal_training_baseline`` seed by seed (``paired_deltas``), or from
    source-only, flagged, while that baseline has no cell. ``known``: budgets' ``summarise`` tables already made."""
    names = (*EFFECT_ROWS, *(v for v in (deployed or {}).values() if v not in EFFECT_ROWS))
    effects: dict = {}
    for budget in (b for b in budgets if (runs_dir / b).is_dir()):
        table = (known or {}).get(budget) or summarise(_load(runs_dir / budget))
        for direction, cells in table.items():
            baseline = equal_training_baseline(budget)
            if baseline not in cells:
                baseline = "source_only"
            if baseline not in cells:
                continue
            rows = {n: paired_deltas(cells[n], cells[baseline]) for n in names if n in cells}
            effects.setdefault(budget, {})[direction] = {
                "baseline": baseline,
                "baseline_iou": cells[baseline]["iou"]["mean"],
                "equal_training": baseline == equal_training_baseline(budget),
                "rows": {n: [float(d) for d in deltas] for n, deltas in rows.items() if deltas.size},
            }
    return effects


def budget_effect_chart(effects: dict, path: Path) -> None:
    """``budget_effects`` as bars: per direction and row (seed methods, then the oracle for scale) one bar
    per budget, the mean paired Δ IoU vs that budget's baseline with its seed std."""
    directions = [d for d in DIRECTIONS if any(d in e for e in effects.values())]
    rows = (*SEED_METHODS, "oracle")
    labels = [f"{row}\n{_direction_title(d)}" for d in directions for row in rows]
    series = {}
    for budget, by_direction in effects.items():
        values = [by_direction.get(d, {}).get("rows", {}).get(row) for d in directions for row in rows]
        series[budget] = [(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) if v else (float("nan"), 0.0) for v in values]
    bar_chart(labels, series, path, "Paired Δ target-test IoU vs the equal-training baseline, per budget", "Δ IoU (mean ± std over seeds)", ylim=None)


def _shape(budget: dict) -> str:
    return f"{budget['batch_size']} × {budget['patch']}² at {budget['pixel_size_nm']:g} nm"


def _budget_rule(name: str) -> str:
    """How a budget trains the seed methods, in words (batch, patch and pixel size where not the ``cpu`` budget's)."""
    b, cpu = BUDGETS[name], BUDGETS["cpu"]
    how = "on the source-only model" if b.get("adapt_from") else "from scratch"
    shape = "" if _shape(b) == _shape(cpu) else f" of {_shape(b)}"
    return f"`{name}` {b['max_epochs'] * b['iterations_per_epoch']} iterations{shape} {how}"


def _effect_range(rows: list[dict[str, list[float]]], methods: Sequence[str]) -> str:
    """The lowest and highest mean paired Δ of ``methods`` over the directions, e.g. ``-0.07 to +0.03``."""
    means = [float(np.mean(r[n])) for r in rows for n in methods if n in r]
    return f"{min(means):+.2f} to {max(means):+.2f}" if means else "–"


def _verdict(budget: str, directions: dict, methods: Sequence[str], title: str = "") -> str:
    """One budget's verdict line: which of ``methods`` beat its baseline on every seed in both directions,
    which fall below it on every seed in one; a range only, while a method has fewer than ``SEEDS_REQUIRED`` seeds."""
    rows = [e["rows"] for e in directions.values()]
    ran = [n for n in methods if len(rows) == len(DIRECTIONS) and all(n in r for r in rows)]
    helps = [n for n in ran if all(min(r[n]) > 0 for r in rows)]
    hurts = [n for n in ran if any(max(r[n]) < 0 for r in rows)]
    counts = [len(r[n]) for r in rows for n in methods if n in r] or [len(d) for r in rows for d in r.values()] or [0]
    fewest, most = min(counts), max(counts)  # a grid still running: the verdict waits for its slowest seed method
    caveat = "" if all(e["equal_training"] for e in directions.values()) else f", vs source-only: {CONTINUED} not run yet"
    seeds = f"{fewest}" if fewest == most else f"{fewest}–{most}"
    head = f"- `{budget}`{f', {title}' if title else ''} ({seeds} seed{'' if most == 1 else 's'}, {len(ran)} of {len(methods)} seed methods run{caveat}): "
    if fewest < SEEDS_REQUIRED:
        return head + f"seed methods' Δ {_effect_range(rows, methods)}; no verdict before {SEEDS_REQUIRED} seeds."
    return head + f"better on every seed, both directions: {', '.join(helps) or 'none'}; worse on every seed in a direction: {', '.join(hurts) or 'none'}."


def budget_effect_lines(effects: dict, deployed: dict[str, str] | None = None) -> list[str]:
    """The table of paired effects per budget (``budget_effects``) and, per budget, which seed methods
    beat its baseline on every seed in both directions; with ``deployed`` (``deployed_variants``), a second
    row per budget whose cells hold them: each seed method as deployed with its batch-norm default."""
    if not effects:
        return []
    variants = {m: v for m, v in (deployed or {}).items() if v != m}

    def has_variants(direction_effects: dict) -> bool:
        """Whether a direction holds cells of a deployed variant."""
        return any(v in direction_effects["rows"] for v in variants.values())

    lines = [
        "Paired Δ IoU vs the baseline of equal total training, same budget and seed (mean ± std, seeds beating it / seeds); "
        f"oracle: the room there is; {CONTINUED}: source-only trained as long, without the target. Seed methods: "
        + ", ".join(_budget_rule(b) for b in effects) + f" (batches of {_shape(BUDGETS['cpu'])} unless noted)."
        + (
            " `<budget>, BN default`: as deployed, with the label-free BN defaults (" + ", ".join(variants.values()) + "), where cells exist."
            if variants else ""
        ),
        "",
        "| budget | direction | baseline (IoU) | " + " | ".join(EFFECT_ROWS) + " |",
        "|---|---|---|" + "---|" * len(EFFECT_ROWS),
    ]
    for budget, directions in effects.items():
        for direction, e in directions.items():
            base = f"{e['baseline']} ({e['baseline_iou']:.3f})" + ("" if e["equal_training"] else ", **shorter training**")
            lines.append(f"| {budget} | {_direction_title(direction)} | {base} | " + " | ".join(_format_deltas(e["rows"].get(n, ()), 2) for n in EFFECT_ROWS) + " |")
            if has_variants(e):
                shown = " | ".join(_format_deltas(e["rows"].get(deployed[m], ()), 2) for m in SEED_METHODS)
                lines.append(f"| {budget}, BN default | {_direction_title(direction)} | same | same | {shown} |")
    lines.append("")
    for budget, directions in effects.items():
        lines.append(_verdict(budget, directions, SEED_METHODS))
        if variants and all(has_variants(e) for e in directions.values()):
            lines.append(_verdict(budget, directions, [deployed[m] for m in SEED_METHODS], "BN default"))
    return lines


def _table_lines(cells: dict, source_only: dict | None, control: dict | None = None) -> list[str]:
    """The per-row results table of one direction; with ``control`` (the ``CONTINUED`` row's cell), a
    second paired column against it: the rows' effect at equal total training."""
    extra = f" paired Δ IoU vs {CONTINUED}, equal training (seeds beating it) |" if control else ""
    lines = [
        f"| row | kind | seeds | IoU | Dice | precision | recall | IoU sel. | gap closed | paired Δ IoU vs source-only (seeds beating it) |{extra}",
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if control else ""),
    ]
    for name, c in cells.items():
        fmt = lambda m: f"{c[m]['mean']:.3f} ± {c[m]['std']:.3f}"  # noqa: E731
        gap = f"{round(100 * c['gap_closed'])} %" if "gap_closed" in c else "–"
        kind = ROW_BY_NAME[name].kind + ("*" if ROW_BY_NAME[name].exploratory else "")
        versus_control = f" {_paired_effect(c, control) if name != 'source_only' else '–'} |" if control else ""
        lines.append(
            f"| {name} | {kind} | {c['n_seeds']} | {fmt('iou')} | {fmt('dice')} | {fmt('precision')} | {fmt('recall')} | "
            f"{c['iou_source_val_selected']:.3f} | {gap} | {_paired_effect(c, source_only)} |{versus_control}"
        )
    return lines


def _distinct_rows(rows: dict, cells: dict) -> tuple[dict, list[str]]:
    """``rows`` less those identical to another row of ``cells`` at every seed, and a line naming each one left out."""
    shown = {n: c for n, c in rows.items() if _identical_to(n, cells) is None}
    return shown, [f"{n} is identical to {_identical_to(n, cells)} at every seed (the same choices), so it is not shown." for n in rows if n not in shown]


def _identical_to(name: str, cells: dict) -> str | None:
    """The row whose per-seed IoUs ``name`` repeats exactly (``oriented_scale_match*`` picks the same pixel
    size as ``scale_match*`` whenever the whole-range search agrees), else None."""
    twin = name.removeprefix("oriented_")
    if twin == name or twin not in cells:
        return None
    return twin if cells[name]["iou_per_seed"] == cells[twin]["iou_per_seed"] else None


def _scale_match_lines(results: list[dict], pixel_size_nm: float) -> list[str]:
    """Per direction and scale-matching row, the target pixel size each seed's evaluation chose (label-free)."""
    chosen: dict[tuple[str, str], list[str]] = {}
    for r in sorted(results, key=lambda r: (r["direction"], r["row"], r["seed"])):
        if r.get("scale_match"):
            chosen.setdefault((r["direction"], r["row"]), []).append(f"{r['scale_match']['pixel_size_nm']:.3g}")
    if not chosen:
        return []
    lines = [f"Training pixel size {pixel_size_nm:g} nm; the target was resampled to (nm, seed by seed):", ""]
    return lines + [f"- {_direction_title(d)}, {row}: {', '.join(sizes)}" for (d, row), sizes in chosen.items()]


def label_free_picks(table: dict, selection: dict, budget: str) -> dict:
    """Per direction, the candidate the held-out rule of ``model_selection.py validate`` picks on each
    seed of ``budget`` (the rule chosen on the other direction only) and that pick's target-test IoU:
    the benchmark's label-free row, a per-target choice rather than one declared row."""
    picks = {}
    for direction, held in (selection.get("held_out") or {}).items():
        rule, cells = held.get("rule"), table.get(direction, {})
        if rule is None or not cells:
            continue
        per_seed = {}
        for pair, stats in selection["table"][rule].items():
            pair_budget, pair_direction, seed_name = pair.split("/")
            name, seed = stats["pick"], int(seed_name.removeprefix("seed"))
            if pair_budget == budget and pair_direction == direction and name in cells:
                per_seed[seed] = {"pick": name, "iou": cells[name]["iou_per_seed"].get(seed), "regret": stats["regret"]}
        per_seed = {s: v for s, v in per_seed.items() if v["iou"] is not None}
        if per_seed:
            picks[direction] = {"rule": rule, "chosen_on": held["chosen_on"], "per_seed": dict(sorted(per_seed.items()))}
    for pair, entry in (selection.get("prospective") or {}).items():  # pairs made after the rule was fixed: adapt.py's rule
        if not pair.startswith(f"{budget}/"):  # another budget's, or a recorded adapt.py run (adapt/<record>)
            continue
        _, direction, seed_name = pair.split("/")
        chosen, cells = entry["adapt.py rule"], table.get(direction, {})
        if chosen["pick"] not in cells:
            continue
        seed = int(seed_name.removeprefix("seed"))
        iou = cells[chosen["pick"]]["iou_per_seed"].get(seed)
        if iou is not None:
            target = picks.setdefault(direction, {"rule": chosen["rule"], "chosen_on": ["adapt.py's, fixed before these cells"], "per_seed": {}})
            target["per_seed"][seed] = {"pick": chosen["pick"], "iou": iou, "regret": chosen["regret"]}
    return picks


def adapt_run_picks(folder: Path, budget: str) -> dict:
    """Per real direction, the pick of each recorded ``adapt.py`` run at ``budget`` on that direction's own
    target (``folder``/*.json; runs on a re-imaged target left out): the product's per-target choice, made
    without target labels, with its IoU, the same run's source-only IoU and its regret over the run's
    candidates, all read from the record's target-test metrics."""
    picks: dict = {}
    for path, record, ious in adapt_records(folder):
        if record.get("budget") != budget or record.get("target_shift") or record.get("family") not in DIRECTIONS:
            continue
        per_seed = picks.setdefault(record["family"], {"rules": set(), "candidates": set(), "per_seed": {}})
        if record["seed"] in per_seed["per_seed"]:
            raise SystemExit(f"{path}: a second recorded adapt.py run of {record['family']}, seed {record['seed']}, budget {budget}; keep one.")
        per_seed["rules"].add(record["rule"])
        per_seed["candidates"].update(ious)
        pick = record["pick"]
        per_seed["per_seed"][record["seed"]] = {"pick": pick, "iou": ious[pick], "source_only": ious["source_only"], "regret": max(ious.values()) - ious[pick], "record": path.name}
    return {
        direction: {
            "rule": " / ".join(sorted(p["rules"])),
            "chosen_on": ["adapt.py's, fixed before these runs"],
            "candidates": sorted(p["candidates"]),
            "per_seed": dict(sorted(p["per_seed"].items())),
        }
        for direction, p in picks.items()
    }


PICK_HEADER = ["| direction | rule (chosen on) | picks (seed: row) | IoU | paired Δ IoU vs source-only | regret |", "|---|---|---|---|---|---|"]


def _pick_row(direction: str, picks: dict, source_only: dict[int, float]) -> str:
    """One direction's picks: the rule, the row picked on each seed, their IoU, the paired effect against
    ``source_only`` (IoU per seed) and the mean regret."""
    ious = np.array([v["iou"] for v in picks["per_seed"].values()])
    cell = {"iou_per_seed": {s: v["iou"] for s, v in picks["per_seed"].items()}}
    regret = np.mean([v["regret"] for v in picks["per_seed"].values()])
    std = f" ± {ious.std(ddof=1):.3f}" if ious.size > 1 else ""
    chosen = ", ".join(f"{s}: {v['pick']}" for s, v in picks["per_seed"].items())
    return f"| {_direction_title(direction)} | {picks['rule']} ({', '.join(picks['chosen_on'])}) | {chosen} | {ious.mean():.3f}{std} | {_paired_effect(cell, {'iou_per_seed': source_only})} | {regret:.3f} |"


def _label_free_pick_lines(table: dict, picks: dict) -> list[str]:
    """The per-target label-free pick beside source-only and the best candidate on the test labels."""
    lines = [
        "## Label-free pick per target",
        "",
        "On each seed, the candidate (source-only and the unsupervised rows) that the selection rule scores highest on",
        "the unlabelled target; the rule is chosen on the *other* direction and its development pairs, or, for pairs made",
        "after it was fixed, is adapt.py's (`model_selection.py validate`, results/label_free_selection.md); regret = best",
        "candidate on the test labels − pick.",
        "",
        *PICK_HEADER,
    ]
    return lines + [_pick_row(d, p, table[d].get("source_only", {}).get("iou_per_seed", {})) for d, p in picks.items()]


def _adapt_pick_lines(picks: dict) -> list[str]:
    """The picks of the recorded ``adapt.py`` runs at this budget (``adapt_run_picks``)."""
    lines = [
        "## Label-free pick per target, as users run it (`adapt.py`)",
        "",
        "The cells above kept no label-free scores, so this budget's per-target pick comes from `scripts/adapt.py`",
        "runs on each direction's real target (results/adapt/): the same training code and budget, the candidates of",
        "adapt.py's recipe picked by its rule on the unlabelled target. Source-only and regret (best candidate on the",
        "test labels − pick) are the same run's.",
        "",
        *(f"- {_direction_title(d)} candidates: {', '.join(p['candidates'])}." for d, p in picks.items()),
        "",
        *PICK_HEADER,
    ]
    return lines + [_pick_row(d, p, {s: v["source_only"] for s, v in p["per_seed"].items()}) for d, p in picks.items()]


def _choice_line(choice: dict) -> list[str]:
    """How the label-free best UDA row was chosen: its synthetic-pair ranking (``choose``), if cached."""
    if not choice:
        return [f"- {BEST_UDA} was declared the best unsupervised row without target labels; run `choose` to record the synthetic-pair ranking."]
    ious = ", ".join(f"{name} {v['mean']:.3f}" for name, v in choice["target_test_iou"].items())
    agree = "as declared" if choice["best_uda"] == BEST_UDA else f"but {BEST_UDA} is declared: update BEST_UDA"
    b = choice["budget"]
    length = f"{b['max_epochs']} × {b['iterations_per_epoch']} iterations"
    pair = f"synthetic pair, target microscope at shift {choice['shift']:g}" if choice.get("shift", 1.0) != 1.0 else "synthetic pair"
    return [f"- Label-free choice (`choose`, {pair}, budget {b['name']}: {length}, seeds {choice['seeds']}), target-test IoU: {ious}; best {choice['best_uda']}, {agree}."]


def _disagreement_lines(table: dict, choice: dict, label_stats: dict) -> list[str]:
    """Predicted / true foreground of source-only, the declared row and each direction's best main
    unsupervised row on the test labels, on the pair the choice was made on and on the real pairs:
    whether source-only under- or over-segments each target, and which way each row moves it."""
    pair = choice.get("target_test_predicted_to_true_foreground", {})
    if "source_only" not in pair or not all("source_only" in cells for cells in table.values()):
        return []
    notes = {"source_only": "", BEST_UDA: " (declared)"}
    for direction, cells in table.items():
        best = _best_on_test_labels(cells)
        if best:
            notes[best] = notes.get(best, "") + f" (best on test labels {_direction_title(direction)})"
    shown = lambda ratio, iou: f"{ratio:.2f} (IoU {iou:.3f})"  # noqa: E731
    lines = [
        "Predicted / true foreground on the target test region (recall / precision; below 1 the model under-segments, "
        "above 1 it over-segments), on the synthetic pair the label-free choice is made on and on the real pairs:",
        "",
        f"| row | synthetic pair | {' | '.join(_direction_title(d) for d in table)} |",
        "|---|---|" + "---|" * len(table),
    ]
    for name, note in notes.items():
        dev = shown(pair[name], choice["target_test_iou"][name]["mean"]) if name in pair else "–"
        real = [shown(_cell_ratio(cells[name]), cells[name]["iou"]["mean"]) if name in cells else "–" for cells in table.values()]
        lines.append(f"| {name}{note} | {dev} | {' | '.join(real)} |")
    low = {d: _cell_ratio(cells["source_only"]) for d, cells in table.items()}
    side = lambda r: "under-segments" if r < 1 else "over-segments"  # noqa: E731
    lines += ["", f"- Source-only {side(pair['source_only'])} the synthetic target ({pair['source_only']:.2f}); " + "; ".join(f"{_direction_title(d)} it {side(r)} ({r:.2f})" for d, r in low.items()) + "."]
    opposite = [d for d, r in low.items() if (r < 1) != (pair["source_only"] < 1)]
    fix = lambda r: "add the foreground source-only misses" if r < 1 else "remove its false foreground"  # noqa: E731
    if opposite:
        shares = "; ".join(f"{_direction_title(d)}: {100 * s['training']:.1f} % source, {100 * s['target_training']:.1f} % target" for d, s in label_stats.items())
        lines.append(
            f"- On {', '.join(_direction_title(d) for d in opposite)} source-only errs the other way than on the synthetic pair, so "
            f"a ranking there rewards the opposite correction: rows that {fix(pair['source_only'])}, where this target needs rows "
            f"that {fix(low[opposite[0]])}. Which way a new target errs is the ratio above, "
            "and its denominator, the target's true foreground, is what target labels would give"
            + (f" (labelled foreground of the training regions, {shares})" if shares else "")
            + ": the unlabelled target alone does not tell, so a choice made on a pair that errs one way can mislead on a target that errs the other."
        )
    return lines


def _best_on_test_labels(cells: dict) -> str | None:
    """The main (not exploratory) unsupervised row of a direction with the highest target-test IoU: the
    optimistic choice, made on the test labels; None before any has run."""
    uda = [r.name for r in MAIN_ROWS if r.kind == "uda" and r.name in cells]
    return max(uda, key=lambda n: cells[n]["iou"]["mean"]) if uda else None


def _per_seed(cell: dict) -> str:
    """`` (per seed, against that seed's own bounds: a / b / c %, mean m %)`` for a cell with two or more such seeds."""
    gaps = list(cell.get("gap_closed_per_seed", {}).values())
    if len(gaps) < 2:
        return ""
    return f" (per seed, against that seed's own bounds: {' / '.join(f'{round(100 * g)}' for g in gaps)} %, mean {round(100 * np.mean(gaps))} %)"


def _status(table: dict, grid: Sequence[str] = ()) -> list[str]:
    """Seeds done (of the budget's ``grid``, by default the main rows) and the ≥ 50 % gap goal per
    direction, computed from the table (never typed in)."""
    lines = []
    main = list(grid) or [r.name for r in MAIN_ROWS]
    for direction, cells in table.items():
        name = _direction_title(direction)
        missing = [n for n in main if cells.get(n, {}).get("n_seeds", 0) < SEEDS_REQUIRED]
        gaps = {n: c["gap_closed"] for n, c in cells.items() if ROW_BY_NAME[n].kind == "uda" and "gap_closed" in c}
        uda = {n: g for n, g in gaps.items() if n in main}
        best = _best_on_test_labels(cells) if uda else None  # the highest IoU is the largest gap closed
        seeds = f"{len(missing)} of {len(main)} rows have fewer than {SEEDS_REQUIRED} seeds" if missing else f"all {len(main)} rows have {SEEDS_REQUIRED} seeds"
        verdict = lambda row: f"{row}, {round(100 * uda[row])} % of the gap ({'meets' if uda[row] >= 0.5 else 'does not meet'} the ≥ 50 % goal)"  # noqa: E731
        declared = f"one unsupervised row for every target, declared on the synthetic pair and chosen without target labels: {verdict(BEST_UDA)}{_per_seed(cells[BEST_UDA])}" if BEST_UDA in uda else f"{BEST_UDA} (chosen without target labels) not run yet"
        goal = f"{declared}; best unsupervised row on the test labels (optimistic): {verdict(best)}" if best else "no gap can be computed yet"
        lines.append(f"- {name}: {seeds}; {goal}.")
        extra = {n: g for n, g in gaps.items() if n not in main}
        if extra:
            top = max(extra, key=extra.get)
            lines.append(
                f"  Exploratory rows (*, {len(extra)}; not candidates for the label-free choice): best on the test labels "
                f"(optimistic) {top}, {round(100 * extra[top])} % of the gap over {cells[top]['n_seeds']} seed(s)."
            )
        oracle = cells.get("oracle", {}).get("iou", {})
        above = [n for n, c in cells.items() if n != "oracle" and c.get("gap_closed", 0) > 1]
        clear = [n for n in above if cells[n]["iou"]["mean"] - oracle["mean"] > oracle["std"]]
        if clear:
            lines.append(
                f"  The oracle (trained from scratch on the target training region at this budget) scores below {', '.join(clear)} "
                "by more than its seed spread: it is under-trained here, so the gap percentages of this direction overstate what a method recovers."
            )
        elif above:
            lines.append(f"  {', '.join(above)} {'scores' if len(above) == 1 else 'score'} above the oracle's mean, within its seed spread (± {oracle['std']:.3f}).")
        lines += _labelled_bound_line(cells)
    return lines


def _labelled_bound_line(cells: dict) -> list[str]:
    """The declared row's gap against the best row with target labels, where that row beats the oracle."""
    labelled = {n: c["iou"]["mean"] for n, c in cells.items() if ROW_BY_NAME[n].kind == "ssda"}
    low, oracle, declared = cells.get("source_only"), cells.get("oracle"), cells.get(BEST_UDA)
    if not (labelled and low and oracle and declared):
        return []
    best = max(labelled, key=labelled.get)
    if labelled[best] <= oracle["iou"]["mean"]:
        return []
    gap = (declared["iou"]["mean"] - low["iou"]["mean"]) / (labelled[best] - low["iou"]["mean"])
    return [
        f"  {best} (with target labels, IoU {labelled[best]:.3f}) beats the oracle ({oracle['iou']['mean']:.3f}); "
        f"taken as the upper bound instead, {BEST_UDA} closes {round(100 * gap)} % of the gap."
    ]


def _diagnosis(table: dict, label_stats: dict) -> list[str]:
    """Per direction, computed from the table: which unsupervised rows score below source-only, whether
    they under- or over-segment the target (predicted / true foreground = recall / precision), whether
    the alignment rows move the way a class-balance difference predicts, and the seed spread."""
    lines = []
    for direction, cells in table.items():
        low = cells.get("source_only")
        if not low:
            continue
        name = _direction_title(direction)
        # paired over the seeds a row shares with source-only, so that source-only seeds a row lacks do not move it
        deltas = {n: paired_deltas(c, low) for n, c in cells.items() if ROW_BY_NAME[n].kind == "uda"}
        below = {n: cells[n] for n, d in deltas.items() if d.size and d.mean() < 0}
        if not below:
            lines.append(f"- {name}: every unsupervised row scores at least source-only.")
            continue
        shifts = ", ".join(f"{n} (paired IoU {deltas[n].mean():+.3f}, predicted/true foreground {_cell_ratio(c):.2f})" for n, c in below.items())
        n_uda = sum(ROW_BY_NAME[n].kind == "uda" for n in cells)
        lines.append(f"- {name}: {len(below)} of {n_uda} unsupervised rows below source-only (predicted/true foreground {_cell_ratio(low):.2f}): {shifts}.")
        stats = label_stats.get(direction)
        aligned = [n for n in ALIGNMENT_ROWS if n in cells]
        if stats and aligned:
            source, target = stats["training"], stats["target_training"]
            fewer = target > source  # matching feature statistics maps part of the target's larger class onto the other
            moved = [n for n in aligned if (_cell_ratio(cells[n]) < _cell_ratio(low)) == fewer]
            lines.append(
                f"  Labelled foreground: {100 * source:.1f} % of the source training pixels, {100 * target:.1f} % of the "
                f"target training region. Alignment of the whole feature distribution assumes equal class balance; with "
                f"{'more' if fewer else 'less'} foreground in the target it pushes part of the target's "
                f"{'mitochondria towards background (under-segmentation)' if fewer else 'background towards mitochondria (over-segmentation)'}. "
                f"{len(moved)} of the {len(aligned)} alignment rows ({', '.join(aligned)}) move that way: {', '.join(moved) or 'none'}."
            )
        if "class_mmd" in cells and "mmd" in cells:
            conditional, whole = cells["class_mmd"], cells["mmd"]
            lines.append(
                f"  Class-conditional MMD matches each class separately, so it makes no equal-balance assumption: IoU "
                f"{conditional['iou']['mean']:.3f} (predicted/true foreground {_cell_ratio(conditional):.2f}) vs "
                f"{whole['iou']['mean']:.3f} ({_cell_ratio(whole):.2f}) for MMD of the whole distribution."
            )
        spread = low["iou"]["std"]
        within = [n for n in below if -deltas[n].mean() <= spread]
        if spread and within:
            lines.append(
                f"  Source-only itself varies by ± {spread:.3f} IoU over seeds; within that spread of it, so not "
                f"distinguishable from it at this budget: {', '.join(within)}."
            )
    lines += _start_lines(table)
    lines.append(
        "- By the protocol, λ, learning rate and iterations stay the fixed defaults of `configs/da` (chosen on the "
        "synthetic pair); tuning them on target labels would make the unsupervised rows look better than a user "
        "without target labels could reproduce."
    )
    return lines


def _start_lines(table: dict) -> list[str]:
    """Rows trained from another row's model, against the model they actually started from (measured
    when they ran; recorded since rows cached from this commit on)."""
    lines = []
    for direction, cells in table.items():
        started = [
            f"{n} {c['iou_start']:.3f} → {c['iou']['mean']:.3f} (paired gain {c['iou_gain_over_start']['mean']:+.3f} ± "
            f"{c['iou_gain_over_start']['std']:.3f}{_from_start(c)}; its {ROW_BY_NAME[n].pretrained} row: "
            f"{cells[ROW_BY_NAME[n].pretrained]['iou']['mean']:.3f})"
            for n, c in cells.items() if "iou_start" in c and ROW_BY_NAME[n].pretrained in cells
        ]
        if started:
            lines.append(
                f"- {_direction_title(direction)}, rows trained from another row's model, target-test IoU of "
                f"the model they started from → theirs (mean over seeds; the gain is per seed, against the same seed's start): "
                f"{', '.join(started)}. A starting model retrained in a later session (its models are not committed) need "
                "not be the one its cached row measured: CPU training repeats exactly only at the same `--threads`. The "
                "gap column and the goal use the cached source-only row, as the issue defines them; the paired gain "
                "removes the source-only seed spread from the comparison."
            )
    return lines


def _from_start(cell: dict) -> str:
    """", x % of the gap from its start to the oracle" where the oracle scores above the start."""
    return f", {round(100 * cell['gap_closed_from_start'])} % of the gap from its start to the oracle" if "gap_closed_from_start" in cell else ""


def _brief_markdown(table: dict, budget: dict) -> str:
    """The bundle README's results in brief: the main rows' target-test IoU and gap closed per direction,
    and where the full tables, the status and the discussion are."""
    directions = list(table)
    head = " | ".join(f"{_direction_title(d)} IoU | gap" for d in directions)
    lines = [
        f"Target-test IoU (mean ± std over seeds, last checkpoint) at the `cpu` budget ({budget['max_epochs']} × {budget['iterations_per_epoch']} "
        f"iterations of {budget['batch_size']} × {budget['patch']}², {budget['pixel_size_nm']:g} nm); gap = share of the source-only → oracle gap closed. "
        "All rows, precision/recall and the label-free choice: [`results/da_benchmark.md`](../../../results/da_benchmark.md); "
        "history: [`results/da_benchmark_notes.md`](../../../results/da_benchmark_notes.md).",
        "",
        f"| row | kind | {head} |",
        "|---|---|" + "---|---|" * len(directions),
    ]
    for row in (ROW_BY_NAME[name] for name in BRIEF_ROWS):
        cells = [table[d].get(row.name) for d in directions]
        if not any(cells):
            continue
        values = [
            f"{c['iou']['mean']:.3f} ± {c['iou']['std']:.3f} | {round(100 * c['gap_closed'])} %" if c and "gap_closed" in c
            else (f"{c['iou']['mean']:.3f} ± {c['iou']['std']:.3f} | –" if c else "– | –")
            for c in cells
        ]
        lines.append(f"| {row.name} | {row.kind} | {' | '.join(values)} |")
    return "\n".join(lines)


def _three_d_markdown(table: dict, table_3d: dict) -> str:
    """The 3D section of the report: each 3D row beside its 2D counterpart, per direction, with the
    paired difference on the seeds both have."""
    b = BUDGETS[THREE_D_BUDGET]
    lines = [
        "## 3D variant (`configs/train_3d.json`)",
        "",
        f"Budget `{THREE_D_BUDGET}`: {b['max_epochs']} × {b['iterations_per_epoch']} iterations of {b['batch_size']} × {b['patch_z']} × {b['patch']}² at "
        f"{b['pixel_size_nm']:g} nm in-plane, as many training voxels as the 2D rows; kernels and strides follow the training voxel size "
        "(VNC 50 nm and FAFB 40 nm sections at 10 nm pixels: two in-plane-only levels, then isotropic). FAFB has 8 sections: every 3D "
        "patch and window spans all of them (the splits are along x, so each region keeps all 8), VNC's 20 sections give 13 z positions. "
        f"Equal voxels is not equal optimiser steps: {b['max_epochs'] * b['iterations_per_epoch']} here, "
        f"{BUDGETS['cpu']['max_epochs'] * BUDGETS['cpu']['iterations_per_epoch']} for the 2D rows, so a 3D deficit may be one of budget.",
        "",
        "| row | direction | 2D IoU | 3D IoU | paired Δ 3D − 2D (seeds) |",
        "|---|---|---|---|---|",
    ]
    for name in THREE_D_ROWS:
        flat = name.removesuffix("_3d")
        for direction in DIRECTIONS:
            c3, c2 = table_3d.get(direction, {}).get(name), table.get(direction, {}).get(flat)
            if not c3:
                continue
            common = sorted(set(c3["iou_per_seed"]) & set(c2["iou_per_seed"])) if c2 else []
            deltas = [c3["iou_per_seed"][s] - c2["iou_per_seed"][s] for s in common]
            paired = f"{np.mean(deltas):+.3f} ± {np.std(deltas, ddof=1) if len(deltas) > 1 else 0:.3f} ({len(deltas)})" if deltas else "–"
            two = f"{c2['iou']['mean']:.3f} ± {c2['iou']['std']:.3f} ({c2['n_seeds']})" if c2 else "–"
            lines.append(f"| {flat} | {_direction_title(direction)} | {two} | {c3['iou']['mean']:.3f} ± {c3['iou']['std']:.3f} ({c3['n_seeds']}) | {paired} |")
    return "\n".join(lines) + "\n"


def _update_docs(table: dict, budget: dict, effects: dict, deployed: dict[str, str], docs: Path = DOCS) -> None:
    """Replace the benchmark block of the bundle's docs/README.md with the results in brief, the paired
    effects of the seed methods per budget and the bar chart."""
    content = docs.read_text()
    start, end = content.find(DOCS_START), content.find(DOCS_END)
    if start < 0 or end < start:
        raise SystemExit(f"{docs}: the markers {DOCS_START!r} ... {DOCS_END!r} are missing.")
    longer = "\n".join(["", "Seed methods at each budget:", "", *budget_effect_lines(effects, deployed)]) + "\n" if effects else ""
    block = f"{DOCS_START}\n{_brief_markdown(table, budget)}\n{longer}\n![IoU per row](../../../results/da_benchmark.png)\n{DOCS_END}"
    with atomic_path(docs) as tmp:
        tmp.write_text(content[:start] + block + content[end + len(DOCS_END) :])


def _bar_chart(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(7 * len(table), 4.5), squeeze=False)
    colours = {"bound": "0.55", "uda": "tab:blue", "ssda": "tab:orange", "exploratory": "lightsteelblue"}
    for ax, (direction, cells) in zip(axes[0], table.items()):
        names = list(cells)
        means = [cells[n]["iou"]["mean"] for n in names]
        stds = [cells[n]["iou"]["std"] for n in names]
        kinds = ["exploratory" if ROW_BY_NAME[n].exploratory else ROW_BY_NAME[n].kind for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3, color=[colours[k] for k in kinds])
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
        ax.set_ylabel("target-test IoU (last checkpoint)")
        ax.set_title(_direction_title(direction))
        ax.set_ylim(0, 1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def report(runs_dir: str = str(RESULTS / "runs"), budget: str = "cpu", out: str = str(RESULTS), docs: bool = True) -> None:
    """Aggregate the cached runs of ``budget`` into ``da_benchmark.{md,json,png}`` under ``out`` (another
    budget than ``cpu``: ``da_benchmark_<budget>.*``); with ``docs`` (``cpu`` only), also the
    results-in-brief block of the bundle's docs/README.md."""
    results = _load(Path(runs_dir) / budget)
    if not results:
        raise SystemExit(f"no cached runs under {Path(runs_dir) / budget}; run the benchmark first.")
    table = summarise(results)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_stats, choice = (_read_beside_runs(runs_dir, name) for name in (LABEL_STATS, CHOICE))
    errors = [e for e in (_read_beside_runs(runs_dir, f"{budget_stem(ERRORS.format(direction=d), budget)}.json") for d in table) if e]
    grid = DEFAULT_ROWS.get(budget, ())
    text = _markdown(table, BUDGETS[budget], label_stats, choice, errors, _scale_match_lines(results, BUDGETS[budget]["pixel_size_nm"]), grid)
    summary = {"budget": {"name": budget, **BUDGETS[budget]}, "declared_uda": BEST_UDA, "exploratory_rows": [r.name for r in ROWS if r.exploratory], "table": table}
    three_d = _load(Path(runs_dir) / THREE_D_BUDGET) if budget == "cpu" and (Path(runs_dir) / THREE_D_BUDGET).is_dir() else []
    if three_d:
        summary["table_3d"] = summarise(three_d)
        text += "\n" + _three_d_markdown(table, summary["table_3d"])
    deployed = deployed_variants(_read_beside_runs(runs_dir, f"{BATCH_NORM_REPORT}.json")) if budget == "cpu" else {}
    effects = budget_effects(Path(runs_dir), known={budget: table}, deployed=deployed) if budget == "cpu" else {}
    if effects:
        summary["budget_effects"] = effects
        budget_effect_chart(effects, out_dir / f"{EFFECTS_CHART}.png")
        text += "\n" + "\n".join(["## Seed methods at each budget", "", *budget_effect_lines(effects, deployed), "", f"![paired effects per budget]({EFFECTS_CHART}.png)"]) + "\n"
    selection = _read_beside_runs(runs_dir, f"{SELECTION}.json")
    picks = label_free_picks(table, selection, budget)
    if picks:
        summary["label_free_pick"] = picks
        text += "\n" + "\n".join(_label_free_pick_lines(table, picks)) + "\n"
    product = adapt_run_picks(Path(runs_dir).parent / ADAPT_RECORDS, budget)
    if product:
        summary["adapt_pick"] = product
        text += "\n" + "\n".join(_adapt_pick_lines(product)) + "\n"
    stem = budget_stem("da_benchmark", budget)
    for suffix, content in (("md", text), ("json", json.dumps(summary, indent=1))):
        with atomic_path(out_dir / f"{stem}.{suffix}") as tmp:
            tmp.write_text(content)
    _bar_chart(table, out_dir / f"{stem}.png")
    if docs and budget == "cpu":
        _update_docs(table, BUDGETS[budget], effects, deployed)
    print(text)


def overlay(
    direction: str = DIRECTIONS[0],
    rows: str | tuple = (),
    seed: int = 0,
    budget: str = "cpu",
    work_dir: str = "runs/benchmark_da",
    runs_dir: str = str(RESULTS / "runs"),
    out: str = str(RESULTS),
) -> str:
    """PNG of target-test sections, ``da_overlay_<direction>.png``: each row's last-checkpoint mask (seed ``seed``) and
    the ground truth, and ``da_errors_<direction>.json``: where each drawn model's errors lie (``error_breakdown``);
    under another budget than ``cpu`` both names end in ``_<budget>`` (``budget_stem``).

    Default rows: source-only, the trained (not exploratory) UDA row with the best mean target-test IoU (chosen on
    test labels, so the figure illustrates, it does not select) and the oracle. Models are drawn as
    trained: rows that adapt at test time (``eval_configs``, e.g. AdaBN) are not drawn. Needs every
    row's model under ``work_dir`` (they are not committed; if one is missing the existing figure is
    left as it is); masks come from the bundle's ``inference.json``
    (preprocessing, inferer, ``post_transforms``) at the volume's own resolution.
    """
    from custom.data import load_datalist, read_volume
    from custom.inference.from_bundle import bundle_parser, load_bundle_network
    from custom.metrics import binary_metrics, error_breakdown
    from custom.visualize import pick_sections, save_overlay_png

    table = summarise(_load(Path(runs_dir) / budget)).get(direction, {})
    if not rows:
        uda = [n for n in table if ROW_BY_NAME[n].kind == "uda" and ROW_BY_NAME[n].train and not (ROW_BY_NAME[n].eval_configs or ROW_BY_NAME[n].exploratory)]
        rows = ("source_only", max(uda, key=lambda n: table[n]["iou"]["mean"]), "oracle") if uda else ("source_only", "oracle")
    rows = (rows,) if isinstance(rows, str) else tuple(rows)
    adapted = [n for n in rows if ROW_BY_NAME[n].eval_configs]
    if adapted:
        raise SystemExit(
            f"overlay draws models as trained, but {', '.join(adapted)} adapt at test time "
            f"({', '.join(ROW_BY_NAME[adapted[0]].eval_configs)}): the drawing would not show the evaluated model."
        )
    path = Path(out) / f"{budget_stem(f'da_overlay_{direction}', budget)}.png"
    check_model_dir(Path(work_dir) / budget, mito_pair_spacing_nm())
    checkpoints = {name: last_model(Path(work_dir) / budget, direction, name, seed) for name in rows}
    missing = [name for name, checkpoint in checkpoints.items() if not checkpoint.is_file()]
    if missing:  # a figure without some of its rows would replace a complete one (e.g. in a fresh clone)
        print(f"overlay: no model for {direction}/{{{', '.join(missing)}}}/seed{seed} under {work_dir}; {path} left as it is.")
        return str(path)
    prepared = Path(work_dir) / "prepared" / direction
    item = load_datalist(prepared, "target_test")[0]
    image, label = read_volume(item["image"])[0], read_volume(item["label"])[0]
    overrides = {"pixel_size_nm": BUDGETS[budget]["pixel_size_nm"], "device": "cpu"}
    parser = bundle_parser(BUNDLE, **overrides)
    data = parser.get_parsed_content("preprocessing")({"image": item["image"]})  # read and resampled once for all rows
    inferer, post_transforms = parser.get_parsed_content("inferer"), parser.get_parsed_content("post_transforms")
    masks, errors = {}, {}
    for name, checkpoint in checkpoints.items():
        network, _ = load_bundle_network(BUNDLE, checkpoint, **overrides)
        with torch.inference_mode():
            pred = inferer(data["image"][None], network)[0]
        mask = post_transforms({**data, "pred": pred})["pred"].numpy().reshape(label.shape)
        # the shown model's own IoU on this region, beside its row's mean: a model retrained in a
        # later session (models are not committed) need not be the one the cached row measured
        iou, mean = binary_metrics(mask, label > 0)["iou"], table.get(name, {}).get("iou", {}).get("mean")
        masks[f"{name} (IoU {iou:.2f}" + (f", row mean {mean:.2f})" if mean is not None else ")")] = mask
        errors[name] = {"iou": iou, **error_breakdown(mask, label > 0, ERROR_BOUNDARY_PX, ERROR_MISSED_COVERAGE)}
    save_overlay_png(path, image, masks, label > 0, pick_sections(image.shape[0], 2), f"{direction.replace('_to_', ' → ')}: target test region, seed {seed}")
    error_file = {"direction": direction, "seed": seed, "boundary_px": ERROR_BOUNDARY_PX, "missed_coverage": ERROR_MISSED_COVERAGE, "models": errors}
    errors_path = Path(out) / f"{budget_stem(ERRORS.format(direction=direction), budget)}.json"
    write_result(errors_path, error_file)
    print(f"wrote {path} and {errors_path.name}")
    print("\n".join(_error_lines(error_file)))
    return str(path)


def budget_stem(stem: str, budget: str) -> str:
    """A result file's name (without suffix) for ``budget``: the main report's (``cpu``) as is, other budgets' suffixed,
    so a run under another budget never replaces the main report's files."""
    return stem if budget == "cpu" else f"{stem}_{budget}"


def _error_lines(error_file: dict) -> list[str]:
    """One line per model of an overlay's error breakdown (``da_errors_<direction>.json``)."""
    direction = _direction_title(error_file["direction"])
    lines = [
        f"- {direction}: a true (predicted) mitochondrion covered less than {100 * error_file['missed_coverage']:.0f} % is missed (false); "
        f"boundary = within {error_file['boundary_px']} label pixels of a true one's border."
    ]
    for name, e in error_file["models"].items():
        lines.append(
            f"- {direction}, {name} (seed {error_file['seed']}, IoU {e['iou']:.3f}): false negatives {100 * e['fn_missed_objects']:.0f} % in "
            f"missed mitochondria ({100 * e['missed_objects']:.0f} % of {e['true_objects']:.0f} missed), {100 * e['fn_boundary']:.0f} % at "
            f"boundaries; false positives {100 * e['fp_boundary']:.0f} % at boundaries, {100 * e['fp_false_objects']:.0f} % in false objects "
            f"({100 * e['false_objects']:.0f} % of {e['predicted_objects']:.0f} predicted)."
        )
    return lines


if __name__ == "__main__":
    fire.Fire({"run": run, "choose": choose, "report": report, "overlay": overlay})
