"""Label-free model selection: pick among trained models on your target, and validate the scores.

    python scripts/model_selection.py pick runs/a/models/model.pt runs/b/models/model.pt runs/c/models/model.pt \\
        --dataset-dir data/my_pair/source_to_target --out selection/
    python scripts/model_selection.py validate        # results/label_free_selection.{md,json,png} from the benchmark's cells

``pick`` scores each model on the target's unlabelled training region of a prepared dataset (and
the source validation region for BBSE) through ``label_free.py``, the path ``adapt.py`` uses, and
writes every score and the pick (``RULES[rule]``) to ``selection.json`` and ``selection.md``. A model
file in the ``models/`` folder of a bundle training also gets its checkpoint agreement (its mask against
that of the checkpoint the training kept at 3/4 of its epochs, ``snapshot_checkpoint_epoch=<n>.pt``).

``validate`` asks whether each score predicts target-test IoU, from the benchmark's cached cells
(every cell records its label-free scores; consensus, and scores added after a cell was made, come
from the segmentations kept in the benchmark's work folder and are written into the cells): per
pair, the Spearman and Kendall correlation of the score with IoU over the unsupervised candidates,
and the regret of picking the top-scored one (best IoU minus the pick's). The rule for a real
direction is chosen on the pairs of the *other* directions (lowest mean regret over their seeds and
development pairs) and then applied to it: the held-out regret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import fire
import label_free
import numpy as np
from adapt import PICK_RULE
from benchmark_common import DEVELOPMENT_SUFFIX as DEVELOPMENT
from benchmark_common import RESULTS, is_candidate, write_result

from custom.handlers import SNAPSHOT_PREFIX, latest_checkpoint
from custom.utils import atomic_path

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "em_mitochondria"
# Candidate rules (a score to maximise), fixed in the commit that introduced them, before any held-out result
RULES: dict[str, Callable[[dict], float | None]] = {
    "consensus_agreement": lambda s: s.get("consensus_agreement"),
    "information_maximization": lambda s: s.get("information_maximization"),
    "negative_entropy": lambda s: None if s.get("prediction_entropy") is None else -s["prediction_entropy"],
    "bbse_agreement": lambda s: None if s.get("bbse_foreground_fraction") is None else -abs(s["predicted_foreground_fraction"] - s["bbse_foreground_fraction"]),
    # added in the commit that introduced them, after the four above had seed-0 regrets, before any result of these
    "batch_nuclear_norm": lambda s: s.get("batch_nuclear_norm"),
    "soft_neighborhood_density": lambda s: s.get("soft_neighborhood_density"),
    "mlls_agreement": lambda s: None if s.get("mlls_foreground_fraction") is None else -abs(s["predicted_foreground_fraction"] - s["mlls_foreground_fraction"]),
    # added in the commit that introduced it, before any of its results
    "rotation_agreement": lambda s: s.get("rotation_agreement"),
    # added in the commit that introduced them, before any of their results: the lowest risk wins
    "dev": lambda s: None if s.get("dev_risk") is None else -s["dev_risk"],
    "iwcv": lambda s: None if s.get("iwcv_risk") is None else -s["iwcv_risk"],
    "source_risk": lambda s: None if s.get("source_validation_loss") is None else -s["source_validation_loss"],
    # added after rotation_agreement picked the only TTA candidate (consistency_tta) on all six cpu_fair seed-0 pairs,
    # before any of its results: the agreement of each candidate's network without its TTA (a TTA candidate
    # and its plain twin share it; ties go to the first candidate in name order, as for every rule)
    "network_rotation_agreement": lambda s: s.get("network_rotation_agreement"),
    # added after network_rotation_agreement's results, before any of its own: the network's mean foreground and
    # background Dice under the rotation, a class absent from both masks counting 0, so that an empty or full
    # mask (Dice 1.0 with itself, picked by adapt.py's membranes test) scores at most 0.5
    "balanced_rotation_agreement": lambda s: s.get("balanced_rotation_agreement"),
    # added in the commit that introduced it, before any of its results (#29, "agreement across checkpoints of one
    # run"): the network's balanced Dice with the checkpoint its training kept at 3/4 of its epochs. Cells trained
    # before that commit kept no such checkpoint, so it ranks only pairs made since, and is chosen nowhere until
    # every judged pair has it
    "checkpoint_agreement": lambda s: s.get("checkpoint_agreement"),
}
# Rules left out of the held-out step: rotation_agreement ranks a TTA candidate, whose averaged prediction agrees
# with its rotated self by construction, against plain ones, so it measures the augmentation, not the model
NOT_HELD_OUT = ("rotation_agreement",)
# The stored score each rule reads: a pair where a candidate has not recorded it (a score added after
# the cell was computed) cannot be ranked by that rule; a recorded None (no BBSE estimate) leaves out
# that candidate only
RULE_SCORES = {
    "consensus_agreement": "consensus_agreement", "information_maximization": "information_maximization", "negative_entropy": "prediction_entropy",
    "bbse_agreement": "bbse_foreground_fraction", "batch_nuclear_norm": "batch_nuclear_norm", "soft_neighborhood_density": "soft_neighborhood_density",
    "mlls_agreement": "mlls_foreground_fraction", "rotation_agreement": "rotation_agreement", "dev": "dev_risk", "iwcv": "iwcv_risk",
    "source_risk": "source_validation_loss", "network_rotation_agreement": "network_rotation_agreement",
    "balanced_rotation_agreement": "balanced_rotation_agreement", "checkpoint_agreement": "checkpoint_agreement",
}  # fmt: skip
# Scores ``collect_pairs`` can compute for cells recorded without them (``validate --compute``), and the
# stored scores each one gives
COMPUTED = label_free.RECOMPUTABLE
COMPUTABLE = tuple(COMPUTED)
# Stored beside a cell's consensus_agreement: the pair's candidates it was computed among (a pair that
# gained or lost a candidate since has no consensus until its segmentations are scored together again)
CONSENSUS_AMONG = "consensus_among"
REPORT = "label_free_selection"
# Pre-registered in the commit that introduced it, before any cpu_fair seed-1 label-free result: the held-out
# step, the overall rule and the batch-norm votes compare rules on the same pairs, the ``comparable_pairs``. The
# pairs whose cells lost the scores once filled in from a work folder (session 29: every cpu_fair seed-0 pair)
# rank only the rules recorded at the time; they stay in the table.
# Scores a pair need not hold to be compared with the others: the consensus, computed per pair, and checkpoint
# agreement, which needs a checkpoint that trainings before it did not keep
PER_RUN_SCORES = ("consensus_agreement", "checkpoint_agreement")
PAIR_SCORES = ("predicted_foreground_fraction", *(key for rule, key in RULE_SCORES.items() if rule not in PER_RUN_SCORES))


def pick(*models: str, dataset_dir: str, out: str, rule: str = PICK_RULE, bundle: str = str(BUNDLE), device: str = "cpu") -> dict:
    """Score ``models`` (model files of this project's bundles, 2 or more; 3 for the consensus) on
    ``dataset_dir``'s unlabelled target training region and write the pick with every score to
    ``out/selection.{json,md}``. ``rule``: by default the one ``adapt.py`` picks with."""
    if rule not in RULES:
        raise SystemExit(f"unknown rule {rule!r}; choose from {sorted(RULES)}.")
    least = 3 if rule == "consensus_agreement" else 2
    if len(models) < least:
        raise SystemExit(f"give at least {least} models for rule {rule} (it compares them), got {len(models)}.")
    names = [_model_name(Path(m), i) for i, m in enumerate(models)]
    target_region, _ = label_free.regions(Path(dataset_dir))
    deployed = {name: {"checkpoint": str(Path(model).resolve()), "tta": False, "snapshot": _snapshot_beside(Path(model))} for name, model in zip(names, models)}
    rows = label_free.score_candidates(deployed, {name: Path(out) / name for name in names}, Path(dataset_dir), Path(bundle), device)
    chosen = max(names, key=lambda n: RULES[rule](rows[n]) if RULES[rule](rows[n]) is not None else -np.inf)
    result = {"rule": rule, "pick": chosen, "models": dict(zip(names, models)), "scores": rows}
    write_result(Path(out) / "selection.json", result)
    lines = [f"# Label-free selection: {chosen}", "", f"Rule `{rule}` on `{target_region}` (no target labels read); every rule's score, higher is better.", "",
             "| model | " + " | ".join(RULES) + " |", "|---|" + "---|" * len(RULES)]  # fmt: skip
    for name in names:
        values = [score(rows[name]) for score in RULES.values()]
        lines.append(f"| {'**' + name + '**' if name == chosen else name} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in values) + " |")
    with atomic_path(Path(out) / "selection.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"picked {chosen}; wrote {Path(out) / 'selection.json'} and selection.md")
    return result


def _snapshot_beside(model: Path) -> str | None:
    """The checkpoint the training that wrote ``model`` kept at 3/4 of its epochs, if it sits beside it (a
    bundle's ``models/`` folder), for ``checkpoint_agreement``; None otherwise."""
    snapshot = latest_checkpoint(str(model.resolve().parent), SNAPSHOT_PREFIX)
    return None if snapshot is None else str(snapshot)


def _model_name(path: Path, index: int) -> str:
    """A readable, unique name for a model file: ``<run folder>`` for ``<run>/models/model*.pt``."""
    base = path.parent.parent.name if path.parent.name == "models" else path.stem
    return f"{index}_{base}"


def pair_statistics(candidates: dict[str, dict], score: Callable[[dict], float | None], key: str | None = None) -> dict:
    """Spearman / Kendall correlation of ``score`` with target-test IoU over the candidates that have
    it, and the regret of the top-scored one; ``candidates``: name -> {"iou", "scores"}. With ``key``
    (the stored score the rule reads), a pair where a scored candidate never recorded it is not ranked."""
    from scipy.stats import kendalltau, spearmanr

    recorded = [c["scores"] for c in candidates.values() if c["scores"]]
    scored = {n: (score(c["scores"]), c["iou"]) for n, c in candidates.items() if c["scores"] and score(c["scores"]) is not None}
    if len(scored) < 3 or (key is not None and any(key not in s for s in recorded)):
        return {"n": len(scored), "spearman": None, "kendall": None, "regret": None, "pick": None}
    names = list(scored)
    values, ious = [scored[n][0] for n in names], [scored[n][1] for n in names]
    top = names[int(np.argmax(values))]  # ties: the first candidate in order
    constant = len(set(values)) == 1  # ranks nothing: no correlation (scipy would give NaN)
    return {
        "n": len(names),
        "spearman": None if constant else float(spearmanr(values, ious).statistic),
        "kendall": None if constant else float(kendalltau(values, ious).statistic),
        "regret": float(max(ious) - scored[top][1]),
        "pick": top,
    }


def rule_statistics(pairs: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """``pair_statistics`` of every rule on every pair: rule -> pair -> statistics."""
    return {rule: {pair: pair_statistics(candidates, score, RULE_SCORES[rule]) for pair, candidates in pairs.items()} for rule, score in RULES.items()}


def family(pair: str) -> str:
    """The real data pair a ``budget/direction/seed`` pair belongs to: a development pair
    ``<direction>@<shift>`` (``development_pairs.py``) belongs to its direction, as do all its seeds."""
    return pair.split("/")[1].split("@")[0]


def held_out(pairs: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Leave one family out: the rule with the lowest mean regret over the pairs of the other families
    (ties: ``RULES`` order), applied to every pair of the held-out family. A family is a real
    direction with all its seeds and development pairs, so no pair sharing the held-out direction's
    data or models helps choose its rule. ``regret``: the mean over the family's real (not
    development) pairs, or over all its pairs for a family of development pairs only."""
    out = {}
    for held in sorted({family(p) for p in pairs}):
        others = [p for p in pairs if family(p) != held]
        rule = overall_rule({p: pairs[p] for p in others})
        if rule is None:
            out[held] = {"rule": None, "regret": None}
            continue
        regrets = {p: pair_statistics(pairs[p], RULES[rule], RULE_SCORES[rule])["regret"] for p in pairs if family(p) == held}
        real = [regrets[p] for p in judged_pairs(regrets) if regrets[p] is not None]
        out[held] = {
            "rule": rule,
            "chosen_on": sorted({family(p) for p in others}),
            "regret": float(np.mean(real)) if real else None,
            "regrets": regrets,
        }
    return out


def judged_pairs(pairs: dict | list) -> list[str]:
    """The pairs a family's held-out regret is the mean over: its real pairs, or all of them for a family
    of development pairs only (``<direction>@<shift>``)."""
    return [p for p in pairs if "@" not in p] or list(pairs)


def _row_regrets(candidates: dict[str, dict]) -> dict[str, float]:
    """Each scored candidate's regret on a pair: best target-test IoU minus its own."""
    scored = {n: c["iou"] for n, c in candidates.items() if c["scores"]}
    return {n: max(scored.values()) - iou for n, iou in scored.items()}


def fixed_row(pairs: dict[str, dict[str, dict]]) -> str | None:
    """The row present in every pair with the lowest mean regret over them (one row deployed everywhere)."""
    regrets = [_row_regrets(c) for c in pairs.values()]
    common = sorted(set.intersection(*(set(r) for r in regrets))) if regrets else []
    return min(common, key=lambda n: np.mean([r[n] for r in regrets])) if common else None


def fixed_row_held_out(pairs: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """The yardstick a score must beat: one row deployed on every target. Leave one family out as in
    ``held_out``: the ``fixed_row`` of the other families' pairs, and its mean regret over the held-out
    family's real pairs."""
    out = {}
    for held in sorted({family(p) for p in pairs}):
        row = fixed_row({p: c for p, c in pairs.items() if family(p) != held})
        real = [_row_regrets(c).get(row) for p, c in pairs.items() if family(p) == held and "@" not in p]
        out[held] = {"row": row, "regret": float(np.mean(real)) if row is not None and real and None not in real else None}
    return out


def prospective(pairs: dict[str, dict[str, dict]], later: dict[str, dict[str, dict]], held: dict[str, dict] | None = None) -> dict[str, dict]:
    """Rules fixed before the ``later`` pairs existed, applied to them: ``adapt.py``'s ``PICK_RULE``, the
    rule with the lowest mean regret over all of ``pairs`` (``overall_rule``), the rule the held-out step
    chose for the later pair's family on the other families' pairs (``held``, ``held_out``'s result; none
    for a family it has no rule for), the ``fixed_row`` of ``pairs`` among the later pair's candidates and
    source-only (no adaptation). Per later pair: each one's pick and regret."""
    rules = {"adapt.py rule": PICK_RULE, "overall rule": overall_rule(pairs)}
    out = {}
    for name, candidates in later.items():
        row = fixed_row({p: {n: c for n, c in earlier.items() if n in candidates} for p, earlier in pairs.items()})
        regrets = _row_regrets(candidates)
        entry = {"n": len(regrets), "best": min(regrets, key=regrets.get) if regrets else None}
        for label, rule in {**rules, "held-out rule": (held or {}).get(family(name), {}).get("rule")}.items():
            stats = pair_statistics(candidates, RULES[rule], RULE_SCORES[rule]) if rule else {"pick": None, "regret": None, "spearman": None}
            entry[label] = {"rule": rule, "pick": stats["pick"], "regret": stats["regret"], "spearman": stats["spearman"]}
        for label, fixed in (("fixed row", row), ("no adaptation", "source_only")):
            entry[label] = {"rule": None, "pick": fixed, "regret": regrets.get(fixed)}
        out[name] = entry
    return out


# Bins of the score difference between two candidates of one pair (``lead_calibration``)
LEAD_EDGES = (0.0, 0.005, 0.01, 0.02, 0.05)


def lead_calibration(pairs: dict[str, dict[str, dict]], rule: str = PICK_RULE, edges: tuple[float, ...] = LEAD_EDGES) -> dict:
    """How often ``rule``'s score orders two candidates of one pair as their target-test IoU does, by how
    far apart the two scores are: per bin [lower, upper) of the difference, the number of candidate pairs,
    the share in which the higher-scored candidate has the higher IoU, the mean IoU difference
    (higher-scored minus lower-scored) and the mean absolute one (what ordering them wrongly risks).
    Candidates with equal scores (a TTA candidate and its plain twin share the network's score) are
    left out: the score does not order them."""
    score, bins = RULES[rule], [{"lower": lo, "upper": hi, "leads": []} for lo, hi in zip(edges, (*edges[1:], None))]
    for candidates in pairs.values():
        scored = [(score(c["scores"]), c["iou"]) for c in candidates.values() if c["scores"] and score(c["scores"]) is not None]
        for i, (score_i, iou_i) in enumerate(scored):
            for score_j, iou_j in scored[i + 1 :]:
                if score_i == score_j:
                    continue
                lead, gain = (score_i - score_j, iou_i - iou_j) if score_i > score_j else (score_j - score_i, iou_j - iou_i)
                next(b for b in reversed(bins) if lead >= b["lower"])["leads"].append(gain)
    for b in bins:
        gains = b.pop("leads")
        means = (np.mean([g > 0 for g in gains]), np.mean(gains), np.mean(np.abs(gains))) if gains else (None, None, None)
        b.update(n=len(gains), **{k: None if v is None else float(v) for k, v in zip(("ordered", "iou_difference", "iou_gap"), means)})
    return {"rule": rule, "pairs": len(pairs), "bins": bins}


def complete_pairs(later: dict[str, dict[str, dict]]) -> tuple[dict[str, dict[str, dict]], dict[str, str]]:
    """The ``later`` pairs with every candidate that any seed of their budget and direction has, and the
    others as "n of N" (still training, or never to be completed: their best candidate may not exist, so they are not judged)."""
    grid = {pair: pair.rsplit("/", 1)[0] for pair in later}  # budget/direction/seed -> budget/direction
    rows: dict[str, set[str]] = {}
    for pair, candidates in later.items():
        rows.setdefault(grid[pair], set()).update(candidates)
    complete = {p: c for p, c in later.items() if set(c) >= rows[grid[p]]}
    return complete, {p: f"{len(c)} of {len(rows[grid[p]])}" for p, c in later.items() if p not in complete}


def comparable_pairs(pairs: dict[str, dict[str, dict]], others: dict[str, dict[str, dict]] | None = None) -> dict[str, dict[str, dict]]:
    """The pairs whose every scored candidate holds every score of ``PAIR_SCORES`` that some candidate of
    ``pairs`` or ``others`` (the recorded adapt.py runs) holds (a recorded None counts: no BBSE estimate);
    consensus and checkpoint agreement (``PER_RUN_SCORES``) are not required."""
    seen = set().union(*(c["scores"] for candidates in (*pairs.values(), *(others or {}).values()) for c in candidates.values()))
    wanted = set(PAIR_SCORES) & seen
    return {k: v for k, v in pairs.items() if all(wanted <= set(c["scores"]) for c in v.values() if c["scores"])}


def with_development(budgets: tuple[str, ...], runs_dir: Path) -> tuple[str, ...]:
    """``budgets`` and, where cached, their development cells (``development_pairs.py``)."""
    return budgets + tuple(f"{b}{DEVELOPMENT}" for b in budgets if (runs_dir / f"{b}{DEVELOPMENT}").is_dir())


def _dataset_dir(work_dir: Path, budget: str, direction: str) -> Path:
    """The prepared dataset a benchmark (or development) cell was scored on, in the benchmark's work folder."""
    return work_dir / budget / "prepared" / direction if "@" in direction else work_dir / "prepared" / direction


def _names(given: str | tuple) -> tuple[str, ...]:
    """A command-line argument of one name or several (fire gives a str or a tuple) as a tuple, empties dropped."""
    return tuple(n for n in ((given,) if isinstance(given, str) else given) if n)


def _missing(compute: str | tuple) -> tuple[str, ...]:
    """``validate``'s ``compute`` as a tuple of ``COMPUTABLE`` names (one clear error for any other)."""
    names = _names(compute)
    unknown = sorted(set(names) - set(COMPUTABLE))
    if unknown:
        raise SystemExit(f"cannot compute {unknown}; choose from {', '.join(COMPUTABLE)}.")
    return names


def collect_pairs(runs_dir: Path, work_dir: Path | None, budgets: tuple[str, ...], compute: tuple[str, ...] = ()) -> dict[str, dict[str, dict]]:
    """Candidates per (budget, direction, seed) pair from the cached cells: the cells' label-free scores,
    consensus recomputed among the pair's candidates from their kept segmentations when ``work_dir`` has
    them, and scores added since a cell was computed filled in from them. ``compute`` (``COMPUTABLE``)
    also fills in scores that need the model again: the rotation agreements (segment the rotated
    target region: about a minute per candidate on a CPU) and DEV / IWCV. Whatever is filled in is
    written into the cell (``record_scores``), so a checkout without ``work_dir`` reproduces the report."""
    pairs: dict[str, dict[str, dict]] = {}
    paths: dict[str, dict[str, Path]] = {}
    for budget in budgets:
        for path in sorted((runs_dir / budget).glob("*/*/seed*.json")):
            cell = json.loads(path.read_text())
            if not is_candidate(cell):
                continue
            key = f"{budget}/{cell['direction']}/seed{cell['seed']}"
            pairs.setdefault(key, {})[cell["row"]] = {"iou": cell["metrics_last"]["iou"], "scores": dict(cell.get("label_free") or {})}
            paths.setdefault(key, {})[cell["row"]] = path
    for key, candidates in pairs.items():
        recorded = {name: dict(c["scores"]) for name, c in candidates.items()}
        if work_dir is not None:
            _fill_from_kept(key, candidates, work_dir, compute)
        among = sorted(n for n, c in candidates.items() if c["scores"])
        for scores in (c["scores"] for c in candidates.values()):  # a consensus among another set of candidates is not this pair's
            if scores.get(CONSENSUS_AMONG) != among:
                scores.pop("consensus_agreement", None)
                scores.pop(CONSENSUS_AMONG, None)
        for name, candidate in candidates.items():
            if candidate["scores"] != recorded[name]:
                record_scores(paths[key][name], candidate["scores"])
    return pairs


def _fill_from_kept(key: str, candidates: dict[str, dict], work_dir: Path, compute: tuple[str, ...]) -> None:
    """Fill in, from the segmentations ``work_dir`` keeps for the pair ``key``, the scores its candidates
    lack (and ``compute``'s, running the model again), and its consensus when every scored candidate
    (3 or more) kept its segmentation."""
    budget, direction, seed = key.split("/")
    folders = {n: work_dir / budget / direction / n / seed / "label_free" for n, c in candidates.items() if c["scores"]}
    folders = {n: f for n, f in folders.items() if label_free.segmentation_complete(f / label_free.TARGET_REGION)}
    for name, folder in folders.items():  # scores added since the cell was computed, from what it kept
        stored = candidates[name]["scores"]
        if not set(label_free.OUTPUT_SCORES) <= set(stored):
            fraction = stored.get("source_validation_foreground_fraction")
            stored = candidates[name]["scores"] = {**label_free.output_scores(folder / label_free.TARGET_REGION, fraction), **stored}
        if not (folder / "deploy.json").exists():
            continue
        deployed = json.loads((folder / "deploy.json").read_text())
        wanted = [n for n in (*compute, *label_free.kept_scores(deployed, folder)) if not set(COMPUTED[n]) <= set(stored)]
        if wanted:
            target_region, source_validation = label_free.regions(_dataset_dir(work_dir, budget, direction))
            if "rotation_agreement" in wanted:
                stored.update(label_free.rotation_scores(deployed, folder, target_region, BUNDLE, "cpu"))
            if "dev" in wanted and source_validation is not None:
                stored.update(label_free.dev_scores(deployed, folder, target_region, source_validation, BUNDLE, "cpu"))
    if len(folders) >= 3 and len(folders) == sum(1 for c in candidates.values() if c["scores"]):
        for name, value in label_free.consensus(folders).items():
            candidates[name]["scores"].update({"consensus_agreement": value, CONSENSUS_AMONG: sorted(folders)})


def record_pair_scores(runs_dir: Path, work_dir: Path, budget: str) -> None:
    """Write into the cells of ``budget`` and its development pairs what only ``work_dir`` can give
    (each pair's consensus, scores added since; ``collect_pairs``): called when a benchmark or
    development run ends, since a session's work folder does not outlive it."""
    collect_pairs(runs_dir, work_dir, with_development((budget,), runs_dir))


def record_scores(path: Path, scores: dict) -> None:
    """Write ``scores`` as the label-free scores of the cached cell at ``path`` (atomically)."""
    cell = json.loads(path.read_text())
    write_result(path, {**cell, "label_free": scores})


def collect_adapt_runs(folder: Path) -> dict[str, dict[str, dict]]:
    """The recorded ``adapt.py`` runs with target-test metrics (``results/adapt/*.json``) as pairs: each
    candidate's label-free scores and target-test IoU. A record names its ``family`` (a benchmark
    direction, or a task such as ``membranes``) and its ``target_shift`` (a development re-imaging, or
    None for real data); the pair is ``adapt/<family>[@<shift>]/<record>``, so ``family`` and the
    real / development split read it as they read the benchmark's pairs."""
    pairs = {}
    for path, record, ious in adapt_records(folder):
        shift = f"@{record['target_shift']}" if record.get("target_shift") else ""
        pairs[f"adapt/{record['family']}{shift}/{path.stem}"] = {n: {"iou": iou, "scores": dict(record["label_free_scores"][n])} for n, iou in ious.items()}
    return pairs


def adapt_records(folder: Path) -> Iterator[tuple[Path, dict, dict[str, float]]]:
    """The recorded ``adapt.py`` runs in ``folder`` that hold target-test metrics (none if it is absent):
    each record's path, the record and every candidate's target-test IoU."""
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("target_test_metrics"):
            yield path, record, {n: m.get("metrics", m)["iou"] for n, m in record["target_test_metrics"].items()}


def validate(
    runs_dir: str = str(RESULTS / "runs"),
    work_dir: str = "runs/benchmark_da",
    budgets: str | tuple = ("cpu_fair",),
    out: str = str(RESULTS),
    compute: str | tuple = (),
    later_budgets: str | tuple = ("cpu_long",),
    adapt_runs: str = str(RESULTS / "adapt"),
) -> dict:
    """Correlations and regrets of every rule per pair (the budgets' development pairs included when
    they exist), and the held-out regret; ``results/label_free_selection.{md,json,png}``.
    ``compute``: scores of ``COMPUTABLE`` (``rotation_agreement``, ``dev``) to compute for cells recorded without them (``collect_pairs``).
    ``later_budgets``: budgets whose pairs were made after the rules were fixed; they choose nothing and
    are reported apart (``prospective``), as are the recorded ``adapt.py`` runs in ``adapt_runs`` (made
    after adapt.py's rule was fixed; "" for none), which also join a second held-out result as pairs of
    their families (``collect_adapt_runs``)."""
    missing = _missing(compute)
    budget_list = with_development(_names(budgets), Path(runs_dir))
    work = Path(work_dir) if Path(work_dir).is_dir() else None
    pairs, later = (
        {k: v for k, v in collect_pairs(Path(runs_dir), work, names, missing).items() if any(c["scores"] for c in v.values())}
        for names in (budget_list, _names(later_budgets))
    )
    recorded = collect_adapt_runs(Path(adapt_runs)) if adapt_runs else {}
    later.update(recorded)
    if not pairs:
        raise SystemExit(f"no cached cell under {runs_dir} ({', '.join(budget_list)}) records label-free scores; run the benchmark with this code first.")
    table = rule_statistics(pairs)
    comparable, judged = comparable_pairs({**pairs, **recorded}), comparable_pairs(pairs, recorded)
    result = {
        "rules": list(RULES), "pairs": {k: sorted(v) for k, v in pairs.items()}, "table": table, "not_comparable": sorted({*pairs, *recorded} - set(comparable)),
        "held_out": held_out(judged), "fixed_row_held_out": fixed_row_held_out(judged),
    }  # fmt: skip
    if recorded:  # pre-registered in ca87c2e: the recorded runs as pairs of their families, beside the result above
        result["held_out_with_adapt_runs"] = held_out(comparable)
    later, unfinished = complete_pairs(later)
    if later:
        result["prospective"] = prospective(judged, later, result["held_out"])
        result["prospective_table"] = rule_statistics(later)
    result["lead_calibration"] = lead_calibration({**pairs, **later})
    if unfinished:
        result["prospective_unfinished"] = unfinished
    write_result(Path(out) / f"{REPORT}.json", result)
    with atomic_path(Path(out) / f"{REPORT}.md") as tmp:
        tmp.write_text(_markdown(result))
    _scatter(pairs, Path(out) / f"{REPORT}.png")
    print(_markdown(result))
    return result


# How each seed method's batch norm meets two domains (#28): the recipe suffix of each variant
BATCH_NORM_VARIANTS = {"separate": "", "joint": "_joint", "domain_specific": "_dsbn", "separate + AdaBN at test": "_adabn"}
SEED_METHODS = ("mmd", "coral", "dann", "ynet", "two_stream")
BATCH_NORM_REPORT = "batch_norm_modes"


def overall_rule(pairs: dict[str, dict[str, dict]]) -> str | None:
    """The rule with the lowest mean regret over all ``pairs`` (ties: ``RULES`` order; never one of ``NOT_HELD_OUT``)."""
    means = {}
    for rule, score in RULES.items():
        if rule in NOT_HELD_OUT:
            continue
        regrets = [pair_statistics(candidates, score, RULE_SCORES[rule])["regret"] for candidates in pairs.values()]
        if regrets and all(r is not None for r in regrets):
            means[rule] = float(np.mean(regrets))
    return min(means, key=means.get) if means else None


def batch_norm_modes(
    runs_dir: str = str(RESULTS / "runs"), work_dir: str = "runs/benchmark_da", budget: str = "cpu_fair", out: str = str(RESULTS), adapt_runs: str = str(RESULTS / "adapt")
) -> dict:
    """Each seed method's batch-norm default, label-free: on every real pair of ``budget`` the rule with
    the lowest mean regret over the pairs ``validate`` judges (development pairs included; comparable
    with each other and the recorded ``adapt_runs``, ``comparable_pairs``) ranks the method's variants
    (``BATCH_NORM_VARIANTS``); the variant ranked first on most pairs is the default (ties: ``separate``).
    Target-test IoU is shown beside each vote, never used. ``results/batch_norm_modes.{json,md}``."""
    budgets = with_development((budget,), Path(runs_dir))
    pairs = collect_pairs(Path(runs_dir), Path(work_dir) if Path(work_dir).is_dir() else None, budgets)
    scored = {k: v for k, v in pairs.items() if any(c["scores"] for c in v.values())}
    pairs = comparable_pairs(scored, collect_adapt_runs(Path(adapt_runs)) if adapt_runs else None)  # validate's comparable pairs
    rule = overall_rule(pairs)
    if rule is None:
        raise SystemExit(f"no rule ranks every comparable pair of {budgets} (``comparable_pairs``); run the benchmark (and development_pairs.py) first.")
    score, real = RULES[rule], {k: v for k, v in pairs.items() if k.split("/")[0] == budget}
    methods = {}
    for method in SEED_METHODS:
        votes, per_pair = dict.fromkeys(BATCH_NORM_VARIANTS, 0), {}
        for pair, candidates in real.items():
            variants = {mode: candidates[method + suffix] for mode, suffix in BATCH_NORM_VARIANTS.items() if method + suffix in candidates}
            ranked = {mode: score(c["scores"]) for mode, c in variants.items() if c["scores"] and score(c["scores"]) is not None}
            if len(ranked) < 2:
                continue
            first = max(ranked, key=ranked.get)
            votes[first] += 1
            per_pair[pair] = {"first": first, "scores": ranked, "iou": {mode: c["iou"] for mode, c in variants.items()}}
        if per_pair:
            top = [mode for mode, n in votes.items() if n == max(votes.values())]
            default = top[0] if len(top) == 1 else "separate"  # a tie keeps today's default
            methods[method] = {"default": default, "votes": votes, "pairs": per_pair}
    result = {"rule": rule, "budget": budget, "variants": BATCH_NORM_VARIANTS, "methods": methods}
    write_result(Path(out) / f"{BATCH_NORM_REPORT}.json", result)
    lines = [
        "# Batch norm across domains: each seed method's default, chosen without target labels",
        "",
        f"Rule `{rule}` (lowest mean regret over the comparable pairs of results/label_free_selection.md: {', '.join(pairs)}) ranks each method's variants on",
        f"every real pair of budget `{budget}`; the variant ranked first on most pairs is the default (ties: separate).",
        "Target-test IoU of each variant is shown for the reader; it chose nothing.",
        "",
        "| method | default | votes | per pair: first by the rule (IoU of each variant) |",
        "|---|---|---|---|",
    ]
    for method, m in methods.items():
        votes = ", ".join(f"{mode} {n}" for mode, n in m["votes"].items() if n)
        pairs_text = "; ".join(f"{p.split('/')[1]} {p.split('/')[2]}: {v['first']} (" + ", ".join(f"{mode} {iou:.3f}" for mode, iou in v["iou"].items()) + ")" for p, v in m["pairs"].items())
        lines.append(f"| {method} | {m['default']} | {votes} | {pairs_text} |")
    with atomic_path(Path(out) / f"{BATCH_NORM_REPORT}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


GOAL_REGRET = 0.03  # the held-out regret the selection issue asks for on each real direction


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _markdown(result: dict) -> str:
    pairs, rules, table = list(result["pairs"]), result["rules"], result["table"]
    lines = [
        "# Label-free selection: does a score predict target-test IoU?",
        "",
        "Per pair (budget/direction/seed) over its unsupervised candidates (source-only and every UDA row with a deployable",
        "model): Spearman ρ of the score with target-test IoU, and the regret of deploying the top-scored candidate (best",
        "IoU − the pick's). `a@shift` is a development pair: direction `a`'s candidates on its target re-imaged",
        "(`development_pairs.py`). Scores come from the target's unlabelled training region (and the source validation",
        "region for BBSE); no target label is read. `–`: fewer than 3 candidates ranked, or a candidate of the pair never",
        "recorded the rule's score (added after the cell was computed: `validate --compute rotation_agreement,dev` fills it",
        "in, into the cell, while the work folder holds the model); a rule without every pair ranked is not chosen in the held-out step. DEV / IWCV / source",
        "risk: the source-validation cross-entropy per window, weighted by a domain classifier's density ratio on the",
        "candidate's bottleneck features (DEV with its control variate; source risk unweighted); the lowest risk is picked.",
        "Rotation agreement: Dice of the target-region mask with the mask of the region rotated by 180°, rotated back; as",
        "deployed (`rotation_agreement`) a TTA candidate's averaged prediction agrees with itself by construction, so that",
        "rule is never chosen in the held-out step; `network_rotation_agreement` is each candidate's network without TTA.",
        "Both score a candidate that predicts no foreground 1.0 (two empty masks agree; no cpu_fair candidate did, a user's",
        "target can); `balanced_rotation_agreement` (foreground and background Dice averaged, a class absent from both",
        "masks counting 0) does not, and is the rule `adapt.py` picks with. Checkpoint agreement: the network's balanced",
        "Dice with the checkpoint its training kept at 3/4 of its epochs (AdaBN / TENT applied to both); only",
        "trainings since it was added keep that checkpoint, so it ranks the prospective pairs alone (last table).",
        "",
        *_rule_table(table, pairs, rules),
    ]
    real, development = [p for p in pairs if "@" not in p], [p for p in pairs if "@" in p]
    lines += ["", "Means over pairs (real / development):", "", "| rule | mean ρ real | mean regret real | mean ρ development | mean regret development |", "|---|---|---|---|---|"]
    for r in rules:
        means = [_mean([table[r][p][k] for p in group]) for group in (real, development) for k in ("spearman", "regret")]
        lines.append(f"| {r} | " + " | ".join(_fmt(m) for m in means) + " |")
    lines += ["", f"Held-out: for each real direction, the rule with the lowest mean regret over the pairs of the *other* directions (their seeds and development pairs) is applied to it; goal ≤ {GOAL_REGRET} IoU.", ""]
    if result["not_comparable"]:
        lines += [
            "Rules are compared on the same pairs: a pair enters the held-out step, the overall rule and the batch-norm votes only",
            "when every candidate holds every score some candidate holds (consensus aside; `comparable_pairs`). Not comparable,",
            f"so tabulated only: {', '.join(result['not_comparable'])} (cells that lost the scores once filled in from a work folder,",
            "see `da_benchmark_notes.md`, session 29; a recorded run made before adapt.py computed every score).", "",
        ]  # fmt: skip
    lines += _held_out_lines(result["held_out"]) or ["- no comparable pair yet"]
    if result.get("held_out_with_adapt_runs"):
        lines += ["", "The same step with the recorded `adapt.py` runs (`results/adapt/`) as pairs too: a run on a direction's data in its",
                  "family, a run on another task's re-imaged target a development pair of that task's family (regret over its pairs):", ""]  # fmt: skip
        lines += _held_out_lines(result["held_out_with_adapt_runs"])
    lines += ["", "Yardstick: no score, one row deployed on every target, the row with the lowest mean regret on the other directions' pairs:", ""]
    lines += [
        f"- {held}: `{f['row']}`, held-out regret {_fmt(f['regret'])}" if f["row"] else f"- {held}: no row could be chosen (no other family has a comparable pair)"
        for held, f in result.get("fixed_row_held_out", {}).items()
    ] or ["- no comparable pair yet"]
    lines += _prospective_markdown(result.get("prospective", {}), result.get("prospective_unfinished", {}))
    if result.get("prospective_table"):
        later = list(result["prospective"])
        lines += ["", "Every rule on the complete prospective pairs (`–`: a candidate never recorded the score, e.g. checkpoint",
                  "agreement on cells trained before it was added, or fewer than 3 candidates ranked):", "",
                  *_rule_table(result["prospective_table"], later, rules)]  # fmt: skip
    return "\n".join(lines + _calibration_markdown(result["lead_calibration"])) + "\n"


def _rule_table(table: dict[str, dict[str, dict]], pairs: list[str], rules: list[str]) -> list[str]:
    """Markdown rows of each rule's Spearman ρ and regret (``pair_statistics``) per pair."""
    lines = ["| pair | n | " + " | ".join(rules) + " |", "|---|---|" + "---|" * len(rules)]
    for pair in pairs:
        n = max(table[r][pair]["n"] for r in rules)
        lines.append(f"| {pair} | {n} | " + " | ".join(f"ρ {_fmt(table[r][pair]['spearman'])}, regret {_fmt(table[r][pair]['regret'])}" for r in rules) + " |")
    return lines


def _calibration_markdown(calibration: dict) -> list[str]:
    """The section on how far apart two candidates' scores must be for the rule to order them (``lead_calibration``)."""
    lines = [
        "", f"## How far apart must two candidates score? (`{calibration['rule']}`)", "",
        f"Every two candidates of one pair ({calibration['pairs']} pairs: those above and the complete prospective ones), by the",
        "difference of their scores: how often the higher-scored one has the higher target-test IoU, the mean IoU difference",
        "(higher-scored minus lower-scored) and the mean absolute one (what ordering them wrongly risks).",
        "`adapt.py`'s report quotes the row its pick's lead falls in.", "",
        "| score difference | candidate pairs | higher-scored has the higher IoU | mean IoU difference | mean absolute IoU difference |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for b in calibration["bins"]:
        span = f"≥ {b['lower']:g}" if b["upper"] is None else f"{b['lower']:g} – {b['upper']:g}"
        values = ["–"] * 3 if b["ordered"] is None else [f"{100 * b['ordered']:.0f} %", f"{b['iou_difference']:+.3f}", f"{b['iou_gap']:.3f}"]
        lines.append(f"| {span} | {b['n']} | " + " | ".join(values) + " |")
    return lines


def _held_out_lines(held_out_result: dict[str, dict]) -> list[str]:
    """One line per held-out family: its rule, where it was chosen and its regret against the goal."""
    lines = []
    for held, h in held_out_result.items():
        if h["rule"] is None:
            lines.append(f"- {held}: no rule could be chosen (no other family has a comparable pair)")
            continue
        seeds = ", ".join(f"{p.split('/')[-1]} {_fmt(h['regrets'][p])}" for p in judged_pairs(h["regrets"]))
        verdict = "meets the goal" if h["regret"] is not None and h["regret"] <= GOAL_REGRET else "misses the goal"
        lines.append(f"- {held}: rule `{h['rule']}` (chosen on {', '.join(h['chosen_on'])}), held-out regret {_fmt(h['regret'])} ({seeds}): {verdict}")
    return lines


def _prospective_markdown(later: dict[str, dict], unfinished: dict[str, str]) -> list[str]:
    """The section on pairs made after the rules were fixed (``prospective``); none without such pairs."""
    if not later and not unfinished:
        return []
    labels = ("adapt.py rule", "overall rule", "held-out rule", "fixed row", "no adaptation")
    lines = [
        "", "## Prospective pairs", "",
        "Pairs whose cells were trained after every rule above was fixed (`validate --later-budgets`) and the recorded `adapt.py`",
        "runs (`adapt/<family>/<record>`, `results/adapt/`, each with its own candidates and pre-registered target): they choose",
        "nothing in the held-out step (the recorded runs do in its second result, pre-registered in ca87c2e).",
        f"`adapt.py rule`: `{PICK_RULE}`, the rule adapt.py picks with; `overall rule`: the rule with the lowest mean regret",
        "over all pairs above; `held-out rule`: the rule the held-out step chose for the pair's direction (on the other",
        "direction's pairs; pre-registered in 90d6c65, before its results on these pairs); `fixed row`: the",
        "row with the lowest mean regret over the pairs above, deployed unchanged; `no adaptation`:",
        "source-only. Regret = best candidate's target-test IoU − the pick's; ρ: Spearman of the rule's score with target-test IoU over the pair's candidates.", "",
        "| pair | candidates | best on the test labels | " + " | ".join(labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]  # fmt: skip
    for pair, entry in later.items():
        cells = [
            f"{entry[k]['pick'] or '–'} ({_fmt(entry[k]['regret'])}" + (f"; ρ {_fmt(entry[k]['spearman'])}" if entry[k]["rule"] else "") + ")"
            + (f", `{entry[k]['rule']}`" if k in ("overall rule", "held-out rule") and entry[k]["rule"] else "")
            for k in labels
        ]  # fmt: skip
        lines.append(f"| {pair} | {entry['n']} | {entry['best']} | " + " | ".join(cells) + " |")
    if unfinished:
        lines += ["", "Incomplete (still training, or missing rows that can no longer be trained: a grid's models live one session),",
                  "not judged until they have every candidate of their budget and direction: "
                  + ", ".join(f"{pair} ({n} candidates)" for pair, n in unfinished.items()) + "."]  # fmt: skip
    return lines


def _scatter(pairs: dict[str, dict[str, dict]], path: Path) -> None:
    """Score against target-test IoU: one row per rule, one column per direction (seeds in colours)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directions = sorted({p.split("/")[1] for p in pairs})
    fig, axes = plt.subplots(len(RULES), len(directions), figsize=(3.2 * len(directions), 2.6 * len(RULES)), squeeze=False)
    for col, direction in enumerate(directions):
        for row, (rule, score) in enumerate(RULES.items()):
            ax = axes[row][col]
            for pair in (p for p in pairs if p.split("/")[1] == direction):
                points = [(score(c["scores"]), c["iou"]) for c in pairs[pair].values() if c["scores"] and score(c["scores"]) is not None]
                ax.scatter([x for x, _ in points], [y for _, y in points], s=12, label=pair.split("/")[-1])
            ax.set_title(direction if row == 0 else "", fontsize=8)
            ax.set_xlabel(rule, fontsize=7)
            ax.set_ylabel("target-test IoU" if col == 0 else "", fontsize=7)
            ax.tick_params(labelsize=6)
        axes[0][col].legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


if __name__ == "__main__":
    # each command prints its report; its return value is for Python callers
    fire.Fire({"pick": pick, "validate": validate, "batch_norm_modes": batch_norm_modes}, serialize=lambda _: None)
