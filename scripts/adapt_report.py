"""``report.md`` and its figures for ``adapt.py``: the pick per target, every candidate's label-free
scores, overlays of source-only vs the pick, and (with ``--evaluate``) target-test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from benchmark_common import RESULTS
from label_free import TARGET_REGION, read_zarr

from custom.data.readers import read_volume
from custom.utils import atomic_path
from custom.visualize import save_overlay_png

REPORT = "report.md"
BASELINE = "source_only"
CALIBRATION = RESULTS / "label_free_selection.json"  # model_selection.py validate: how far apart scores must be
COLUMN_TITLES = {
    "consensus_agreement": "consensus Dice", "checkpoint_agreement": "checkpoint agreement", "information_maximization": "IM", "prediction_entropy": "entropy",
    "predicted_foreground_fraction": "predicted fg", "bbse_foreground_fraction": "BBSE fg",
}  # fmt: skip


def _scores_png(path: Path, name: str, scores: dict, rule: str, pick: str) -> Path:
    """Two panels: each candidate's score under the pick's ``rule``, and its predicted foreground
    fraction beside the BBSE estimate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores)
    y = np.arange(len(names))
    height = 0.45 * len(names) + 1.9
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, height), sharey=True)
    colours = ["tab:green" if n == pick else "tab:grey" for n in names]
    bars = left.barh(y, [scores[n][rule] for n in names], color=colours)
    left.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)  # close scores differ in the third digit
    left.set_xlim(0, 1.15)
    left.set_xlabel(f"{rule} (the pick's score)")
    left.set_yticks(y, [f"{n} (pick)" if n == pick else n for n in names], fontsize=8)
    left.invert_yaxis()
    right.barh(y - 0.2, [scores[n]["predicted_foreground_fraction"] for n in names], 0.4, label="predicted")
    right.barh(y + 0.2, [scores[n]["bbse_foreground_fraction"] or 0.0 for n in names], 0.4, label="BBSE estimate (0: undefined)")
    right.set_xlabel("target foreground fraction")
    fig.legend(*right.get_legend_handles_labels(), loc="lower right", fontsize=8, ncol=2)  # below the panel, off the bars
    fig.suptitle(f"{name}: label-free scores (no target labels)")
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _overlay_png(path: Path, out_dir: Path, name: str, region: str, pick: str) -> Path:
    """Target sections (unlabelled training region) as source-only and the pick segment them."""
    image = read_volume(region)[0]
    shown = [BASELINE, pick] if BASELINE != pick and (out_dir / name / "candidates" / BASELINE).exists() else [pick]
    masks = {n: read_zarr(out_dir / name / "candidates" / n / TARGET_REGION, "labels/mask/0") for n in shown}
    return save_overlay_png(path, image, masks, title=f"{name}: source-only vs the pick ({pick}), no labels")


def _table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(r) + " |" for r in rows[:1]] + ["|" + "---|" * len(rows[0])] + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def validated_lead(rule: str, lead: float, calibration_path: Path = CALIBRATION) -> dict | None:
    """The bin of the project's validation (``model_selection.lead_calibration``) that a lead of ``lead`` in
    ``rule`` falls in: how often candidates that far apart were ordered as their target-test IoU.
    None without that validation for ``rule``."""
    if not calibration_path.is_file():
        return None
    calibration = json.loads(calibration_path.read_text()).get("lead_calibration")
    if not calibration or calibration["rule"] != rule:
        return None
    found = next((b for b in reversed(calibration["bins"]) if lead >= b["lower"]), None)
    return found if found and found["n"] else None


def _margin_line(name: str, scores: dict, rule: str, pick: str) -> list[str]:
    """How far the pick leads the runner-up in the rule's score, and how often leads that size ordered
    two candidates correctly in the project's validation."""
    others = {n: s[rule] for n, s in scores.items() if n != pick and s.get(rule) is not None}
    if not others:
        return []
    runner_up = max(others, key=others.get)
    lead = scores[pick][rule] - others[runner_up]
    line = f"The pick leads the runner-up, {runner_up}, by {lead:.3f} in `{rule}`."
    found = validated_lead(rule, lead)
    if found:
        line += (
            f" In the project's validation (`results/{CALIBRATION.name}`), of {found['n']} pairs of candidates whose scores differed by"
            f" {found['lower']:g}{' or more' if found['upper'] is None else ' to ' + format(found['upper'], 'g')}, the higher-scored one had the higher"
            f" target-test IoU in {100 * found['ordered']:.0f} % (50 %: a coin toss); their IoU differed by {found['iou_gap']:.3f} on average."
        )
    return [line + f" To check a close call, compare their masks of the target region in `{name}/candidates/`.", ""]


def write_report(out_dir: Path, summary: dict) -> Path:
    """Write ``out_dir/report.md`` (and its PNGs beside it) from ``adapt.run``'s summary."""
    rule = summary["rule"]
    lines = [
        "# Adaptation report",
        "",
        f"Task **{summary['task']}**, budget **{summary['budget']}**, seed {summary['seed']}; candidates: {', '.join(summary['candidates'])}.",
        f"The pick is the candidate with the highest `{rule}` on the target's unlabelled training region: {summary['rule_text']}.",
        "How far this score predicts target-test IoU, and its misses, are in the project's `results/label_free_selection.md`.",
        "No target label is read to pick. BBSE estimates the target's foreground fraction from the source-validation confusion",
        "matrix: a predicted fraction far from it hints at over- or under-segmentation.",
        "",
    ]
    columns = dict.fromkeys((rule, "consensus_agreement", "checkpoint_agreement", "information_maximization", "prediction_entropy", "predicted_foreground_fraction", "bbse_foreground_fraction"))
    header = ["candidate", f"{rule} (pick's score)"] + [COLUMN_TITLES[k] for k in columns if k != rule]
    for name, target in summary["targets"].items():
        scores, pick = target["scores"], target["pick"]
        lines += [f"## {name}", "", f"Target `{target['image']}`: picked **{pick}**; mask `{target['outputs']['mask']}`, OME-Zarr `{target['outputs']['zarr']}`.", ""]
        metrics = target.get("metrics")
        rows = [header + ["IoU (test labels)", "Dice (test labels)"] if metrics else header]
        for candidate, s in scores.items():
            row = [f"**{candidate}**" if candidate == pick else candidate] + [
                "n/a" if s.get(k) is None else f"{s[k]:.3f}" for k in columns
            ]
            if metrics:
                row += [f"{metrics[candidate]['iou']:.3f}", f"{metrics[candidate]['dice']:.3f}"]
            rows.append(row)
        lines += _table(rows) + [""] + _margin_line(name, scores, rule, pick)
        if metrics:
            best = max(metrics, key=lambda n: metrics[n]["iou"])
            lines += [
                f"With the test labels (`--evaluate`, for this report only): the pick scores IoU {metrics[pick]['iou']:.3f}; the best candidate "
                f"on those labels is {best} ({metrics[best]['iou']:.3f}; regret {metrics[best]['iou'] - metrics[pick]['iou']:.3f})"
                + (f"; source-only {metrics[BASELINE]['iou']:.3f}." if BASELINE in metrics else "."),
                "",
            ]
        figures = [
            _scores_png(out_dir / f"{name}_scores.png", name, scores, rule, pick),
            _overlay_png(out_dir / f"{name}_overlay.png", out_dir, name, target["scores_region"], pick),
        ]
        lines += [f"![{f.stem}]({f.name})" for f in figures] + [""]
    path = out_dir / REPORT
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path
