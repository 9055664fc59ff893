"""Label-free model selection: pick among trained models on your target, and validate the scores.

    python scripts/model_selection.py pick runs/a/models/model.pt runs/b/models/model.pt runs/c/models/model.pt \\
        --dataset-dir data/my_pair/source_to_target --out selection/
    python scripts/model_selection.py validate        # results/label_free_selection.{md,json,png} from the benchmark's cells

``pick`` scores each model on the target's unlabelled training region of a prepared dataset (and
the source validation region for BBSE) through ``label_free.py``, the path ``adapt.py`` uses, and
writes every score and the pick (``RULES[rule]``) to ``selection.json`` and ``selection.md``.

``validate`` asks whether each score predicts target-test IoU, from the benchmark's cached cells
(every cell records its label-free scores; consensus comes from the segmentations kept in the
benchmark's work folder): per pair, the Spearman and Kendall correlation of the score with IoU over
the unsupervised candidates, and the regret of picking the top-scored one (best IoU minus the
pick's). The rule for a pair is chosen on the *other* pairs (lowest mean regret) and then applied to
it: the held-out regret.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import fire
import label_free
import numpy as np
from benchmark_common import RESULTS, write_result

from custom.utils import atomic_path

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "em_mitochondria"
# Candidate rules (a score to maximise), fixed in the commit that introduced them, before any held-out result
RULES: dict[str, Callable[[dict], float | None]] = {
    "consensus_agreement": lambda s: s.get("consensus_agreement"),
    "information_maximization": lambda s: s.get("information_maximization"),
    "negative_entropy": lambda s: None if s.get("prediction_entropy") is None else -s["prediction_entropy"],
    "bbse_agreement": lambda s: None if s.get("bbse_foreground_fraction") is None else -abs(s["predicted_foreground_fraction"] - s["bbse_foreground_fraction"]),
}
UNSUPERVISED = ("uda", "bound")  # cells of these kinds are candidates (the bound kind: source-only only)
REPORT = "label_free_selection"


def pick(*models: str, dataset_dir: str, out: str, rule: str = "consensus_agreement", bundle: str = str(BUNDLE), device: str = "cpu") -> dict:
    """Score ``models`` (model files of this project's bundles, 3 or more) on ``dataset_dir``'s unlabelled
    target training region and write the pick with every score to ``out/selection.{json,md}``."""
    if rule not in RULES:
        raise SystemExit(f"unknown rule {rule!r}; choose from {sorted(RULES)}.")
    if len(models) < 3:
        raise SystemExit(f"give at least 3 models (the consensus compares each with the others), got {len(models)}.")
    names = [_model_name(Path(m), i) for i, m in enumerate(models)]
    target_region, _ = label_free.regions(Path(dataset_dir))
    deployed = {name: {"checkpoint": str(Path(model).resolve()), "tta": False} for name, model in zip(names, models)}
    rows = label_free.score_candidates(deployed, {name: Path(out) / name for name in names}, Path(dataset_dir), Path(bundle), device)
    chosen = max(names, key=lambda n: RULES[rule](rows[n]) if RULES[rule](rows[n]) is not None else -np.inf)
    result = {"rule": rule, "pick": chosen, "models": dict(zip(names, models)), "scores": rows}
    write_result(Path(out) / "selection.json", result)
    lines = [f"# Label-free selection: {chosen}", "", f"Rule `{rule}` on `{target_region}` (no target labels read).", "",
             "| model | consensus Dice | IM | entropy | predicted fg | BBSE fg |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        s = rows[name]
        values = [s["consensus_agreement"], s["information_maximization"], s["prediction_entropy"], s["predicted_foreground_fraction"], s["bbse_foreground_fraction"]]
        lines.append(f"| {'**' + name + '**' if name == chosen else name} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in values) + " |")
    with atomic_path(Path(out) / "selection.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"picked {chosen}; wrote {Path(out) / 'selection.json'} and selection.md")
    return result


def _model_name(path: Path, index: int) -> str:
    """A readable, unique name for a model file: ``<run folder>`` for ``<run>/models/model*.pt``."""
    base = path.parent.parent.name if path.parent.name == "models" else path.stem
    return f"{index}_{base}"


def pair_statistics(candidates: dict[str, dict], score: Callable[[dict], float | None]) -> dict:
    """Spearman / Kendall correlation of ``score`` with target-test IoU over the candidates that have
    it, and the regret of the top-scored one; ``candidates``: name -> {"iou", "scores"}."""
    from scipy.stats import kendalltau, spearmanr

    scored = {n: (score(c["scores"]), c["iou"]) for n, c in candidates.items() if c["scores"] and score(c["scores"]) is not None}
    if len(scored) < 3:
        return {"n": len(scored), "spearman": None, "kendall": None, "regret": None, "pick": None}
    names = list(scored)
    values, ious = [scored[n][0] for n in names], [scored[n][1] for n in names]
    top = names[int(np.argmax(values))]  # ties: the first candidate in order
    return {
        "n": len(names),
        "spearman": float(spearmanr(values, ious).statistic),
        "kendall": float(kendalltau(values, ious).statistic),
        "regret": float(max(ious) - scored[top][1]),
        "pick": top,
    }


def held_out(pairs: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Leave one pair out: the rule with the lowest mean regret on the other pairs (ties: ``RULES``
    order), applied to the held-out pair."""
    out = {}
    for held in pairs:
        others = [p for p in pairs if p != held]
        mean_regret = {}
        for rule, score in RULES.items():
            regrets = [pair_statistics(pairs[p], score)["regret"] for p in others]
            if regrets and all(r is not None for r in regrets):
                mean_regret[rule] = float(np.mean(regrets))
        if not mean_regret:
            out[held] = {"rule": None, "regret": None}
            continue
        rule = min(mean_regret, key=mean_regret.get)
        out[held] = {"rule": rule, "chosen_on": others, "regret": pair_statistics(pairs[held], RULES[rule])["regret"]}
    return out


def collect_pairs(runs_dir: Path, work_dir: Path | None, budgets: tuple[str, ...]) -> dict[str, dict[str, dict]]:
    """Candidates per (budget, direction, seed) pair from the cached cells: the cells' label-free scores,
    consensus recomputed among the pair's candidates from their kept segmentations when ``work_dir`` has them."""
    pairs: dict[str, dict[str, dict]] = {}
    for budget in budgets:
        for path in sorted((runs_dir / budget).glob("*/*/seed*.json")):
            cell = json.loads(path.read_text())
            if cell.get("kind") not in UNSUPERVISED or (cell.get("kind") == "bound" and cell["row"] != "source_only"):
                continue
            key = f"{budget}/{cell['direction']}/seed{cell['seed']}"
            pairs.setdefault(key, {})[cell["row"]] = {"iou": cell["metrics_last"]["iou"], "scores": dict(cell.get("label_free") or {})}
    if work_dir is not None:
        for key, candidates in pairs.items():
            budget, direction, seed = key.split("/")
            folders = {n: work_dir / budget / direction / n / seed / "label_free" for n, c in candidates.items() if c["scores"]}
            folders = {n: f for n, f in folders.items() if label_free.segmentation_complete(f / label_free.TARGET_REGION)}
            if len(folders) >= 3:
                for name, value in label_free.consensus(folders).items():
                    candidates[name]["scores"]["consensus_agreement"] = value
    return pairs


def validate(runs_dir: str = str(RESULTS / "runs"), work_dir: str = "runs/benchmark_da", budgets: str | tuple = ("cpu",), out: str = str(RESULTS)) -> dict:
    """Correlations and regrets of every rule per pair, and the held-out regret; ``results/label_free_selection.{md,json,png}``."""
    budget_list = (budgets,) if isinstance(budgets, str) else tuple(budgets)
    pairs = collect_pairs(Path(runs_dir), Path(work_dir) if Path(work_dir).is_dir() else None, budget_list)
    pairs = {k: v for k, v in pairs.items() if any(c["scores"] for c in v.values())}
    if not pairs:
        raise SystemExit(f"no cached cell under {runs_dir} ({', '.join(budget_list)}) records label-free scores; run the benchmark with this code first.")
    table = {rule: {pair: pair_statistics(candidates, score) for pair, candidates in pairs.items()} for rule, score in RULES.items()}
    result = {"rules": list(RULES), "pairs": {k: sorted(v) for k, v in pairs.items()}, "table": table, "held_out": held_out(pairs)}
    write_result(Path(out) / f"{REPORT}.json", result)
    with atomic_path(Path(out) / f"{REPORT}.md") as tmp:
        tmp.write_text(_markdown(result))
    _scatter(pairs, Path(out) / f"{REPORT}.png")
    print(_markdown(result))
    return result


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _markdown(result: dict) -> str:
    pairs = list(result["pairs"])
    lines = [
        "# Label-free selection: does a score predict target-test IoU?",
        "",
        "Per pair (budget/direction/seed), over its unsupervised candidates: Spearman ρ and Kendall τ of the score with",
        "target-test IoU, and the regret of picking the top-scored candidate (best IoU − pick's IoU). Scores come from the",
        "target's unlabelled training region (and the source validation region for BBSE); no target label is read.",
        "",
        "| rule | " + " | ".join(pairs) + " |",
        "|---|" + "---|" * len(pairs),
    ]
    for rule in result["rules"]:
        cells = [result["table"][rule][p] for p in pairs]
        lines.append(f"| {rule} | " + " | ".join(f"ρ {_fmt(c['spearman'])}, τ {_fmt(c['kendall'])}, regret {_fmt(c['regret'])}" for c in cells) + " |")
    lines += ["", "Held-out (the rule chosen on the other pairs by mean regret, applied to this one):", ""]
    for pair, h in result["held_out"].items():
        lines.append(f"- {pair}: {h['rule'] or '–'}, regret {_fmt(h['regret'])}")
    return "\n".join(lines) + "\n"


def _scatter(pairs: dict[str, dict[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 3.6), squeeze=False)
    for ax, (pair, candidates) in zip(axes[0], pairs.items()):
        points = [(RULES["consensus_agreement"](c["scores"]), c["iou"], n) for n, c in candidates.items() if c["scores"]]
        points = [p for p in points if p[0] is not None]
        ax.scatter([p[0] for p in points], [p[1] for p in points])
        for x, y, name in points:
            ax.annotate(name, (x, y), fontsize=6)
        ax.set_xlabel("consensus agreement (label-free)")
        ax.set_ylabel("target-test IoU")
        ax.set_title(pair, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    fire.Fire({"pick": pick, "validate": validate})
