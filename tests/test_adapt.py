"""scripts/adapt.py, the one-command adaptation: end to end on the synthetic pair, resumed after a
kill, label-free, and careless inputs refused before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from .conftest import REPO_ROOT, run_bundle

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import adapt  # noqa: E402
import recipes  # noqa: E402

CANDIDATES = "source_only,adabn,adabn_balanced_consistency"  # one adaptation training to interrupt


def _command(synthetic_dir: Path, out: Path, evaluate: bool) -> list[str]:
    volumes = synthetic_dir / "volumes"
    cmd = [
        sys.executable, str(REPO_ROOT / "scripts" / "adapt.py"), "run",
        "--source", str(volumes / "source" / "source.tif"), "--source-labels", str(volumes / "source" / "source_label.tif"),
        "--target", str(volumes / "target" / "target.tif"), "--out", str(out), "--candidates", CANDIDATES, "--threads", "1",
    ]  # fmt: skip
    return cmd + (["--evaluate", str(volumes / "target" / "target_label.tif")] if evaluate else [])


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def _mask(out: Path) -> np.ndarray:
    return tifffile.imread(out / "target" / "segmentation_mask.tif")


def test_adapt_end_to_end_resumes_after_a_kill_and_never_reads_target_labels_to_pick(synthetic_dir, tmp_path):
    whole = tmp_path / "whole"
    done = subprocess.run(_command(synthetic_dir, whole, evaluate=True), capture_output=True, text=True, env=_env(), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scores = json.loads((whole / "target" / "scores.json").read_text())
    assert scores["pick"] in CANDIDATES.split(",") and scores["rule"] == "balanced_rotation_agreement"
    report = (whole / "report.md").read_text()
    assert "IoU (test labels)" in report and (whole / "target_overlay.png").stat().st_size > 0 and (whole / "target_scores.png").exists()
    # the report shows the rule adapt.py picked with, and the pick tops its column
    rows = [line.split("|") for line in report.splitlines() if line.startswith("| ") and not line.startswith("| candidate")]
    assert "| candidate | balanced_rotation_agreement (pick's score) |" in report
    rule_column = {cells[1].strip().strip("*"): float(cells[2]) for cells in rows}
    assert rule_column[scores["pick"]] == max(rule_column.values()) and "The pick leads the runner-up, " in report
    assert (whole / "target" / "segmentation.zarr").is_dir()

    # killed while the adaptation trains, then run again: finished steps are skipped, the rest resumed
    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(synthetic_dir, killed, evaluate=False), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True)
    started = killed / "target" / "runs" / "adabn_balanced_consistency" / "logs" / "train.log"
    deadline = time.time() + 600
    while not started.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "report.md").exists()
    rerun = subprocess.run(_command(synthetic_dir, killed, evaluate=False), capture_output=True, text=True, env=_env(), timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "train source_only" not in rerun.stdout  # finished before the kill: skipped
    again = subprocess.run(_command(synthetic_dir, killed, evaluate=False), capture_output=True, text=True, env=_env(), timeout=900)
    assert "[done already]" in again.stdout and "  train " not in again.stdout

    # the same outputs as the uninterrupted run, which had target labels to evaluate with: the
    # scores and the pick do not depend on them
    resumed = json.loads((killed / "target" / "scores.json").read_text())
    assert resumed["pick"] == scores["pick"] and resumed["scores"] == scores["scores"]
    np.testing.assert_array_equal(_mask(killed), _mask(whole))

    # the deployed AdaBN model is the network that evaluate.json + da/adabn.json measured
    deployed = whole / "target" / "candidates" / "adabn" / "model.pt"
    eval_dir = tmp_path / "deployed_eval"
    run_bundle(
        ["inference.json", "evaluate.json"], tmp_path / "bundle", "--dataset_dir", str(whole / "data" / "target" / "source_to_target"),
        "--checkpoint", str(deployed), "--eval_dir", str(eval_dir), "--pixel_size_nm", "10.0", "--roi_size", "[128, 128]",
    )
    plain = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    adapted = json.loads((whole / "target" / "evaluation" / "adabn" / "metrics.json").read_text())["metrics"]
    assert plain["iou"] == pytest.approx(adapted["iou"], abs=1e-6)

    # a trained model instead of source volumes: test-time candidates only, the model's own pixel size
    model = whole / "target" / "runs" / "source_only" / "models" / "model_final.pt"
    volumes = synthetic_dir / "volumes"
    copy = tmp_path / "second" / "target.tif"  # a second target volume (same name: its folder is target_2)
    copy.parent.mkdir()
    copy.write_bytes((volumes / "target" / "target.tif").read_bytes())
    given = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "adapt.py"), "run", "--source-model", str(model), "--target", f"[{volumes / 'target' / 'target.tif'},{copy}]",
         "--out", str(tmp_path / "given"), "--candidates", "source_only,adabn,tent", "--threads", "1"],
        capture_output=True, text=True, env=_env(), timeout=900,
    )  # fmt: skip
    assert given.returncode == 0, given.stdout[-3000:] + given.stderr[-3000:]
    assert "  train " not in given.stdout and not (tmp_path / "given" / "target" / "runs" / "source_only" / "models").exists()
    given_scores = json.loads((tmp_path / "given" / "target" / "scores.json").read_text())
    assert given_scores["scores"]["adabn"]["bbse_foreground_fraction"] is None  # no source validation region to estimate from
    assert json.loads((tmp_path / "given" / "target_2" / "scores.json").read_text())["scores"] == given_scores["scores"]  # each target its own pick
    assert (tmp_path / "given" / "target_2" / "segmentation_mask.tif").exists() and "## target_2" in (tmp_path / "given" / "report.md").read_text()
    same = ("information_maximization", "prediction_entropy", "predicted_foreground_fraction")  # the same model adapted to the same target region
    assert {k: given_scores["scores"]["adabn"][k] for k in same} == {k: scores["scores"]["adabn"][k] for k in same}


def _run(tmp_path: Path, synthetic_dir: Path, **changes) -> None:
    volumes = synthetic_dir / "volumes"
    args = {
        "source": str(volumes / "source" / "source.tif"), "source_labels": str(volumes / "source" / "source_label.tif"),
        "target": str(volumes / "target" / "target.tif"), "out": str(tmp_path / "out"),
    }  # fmt: skip
    adapt.run(**{**args, **changes})


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"target": "missing.tif"}, "not found"),
        ({"out": "SOURCE_DIR"}, "input"),
        ({"evaluate": ["a.tif", "b.tif"]}, "one label volume per target"),
        ({"candidates": "source_only,adabn,nope"}, "unknown candidates"),
        ({"candidates": "source_only,adabn,oracle"}, "target labels"),
        ({"candidates": "source_only,scale_match,adabn"}, "cannot be deployed"),
        ({"candidates": "source_only"}, "at least 2"),
        ({"budget": "huge"}, "unknown budget"),
        ({"task": "nuclei"}, "unknown task"),
        ({"source_spacing": "50,4.6"}, "three positive numbers"),
        ({"source": None, "source_labels": None}, "--source-model"),
        ({"source_labels": None}, "--source-model"),
        ({"source": None, "source_labels": None, "source_model": "NO_RECORD", "candidates": "source_only,adabn,tent"}, "records no pixel size"),
        ({"source": None, "source_labels": None, "source_model": "NO_RECORD"}, "trains on the source"),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path, synthetic_dir, changes, match):
    import torch
    from custom.networks import UNet

    torch.save({"model": UNet(2).state_dict()}, tmp_path / "bare.pt")  # weights only, no record
    special = {"SOURCE_DIR": str(synthetic_dir / "volumes" / "source"), "NO_RECORD": str(tmp_path / "bare.pt")}
    changes = {k: special.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises((ValueError, FileExistsError), match=match):
        _run(tmp_path, synthetic_dir, **changes)
    assert not (tmp_path / "out" / "data").exists() and not list(tmp_path.glob("out/*/runs"))


def test_target_lists_as_typed_on_the_command_line():
    assert adapt._as_list("[/data/a.tif,/data/b c.tif]") == ["/data/a.tif", "/data/b c.tif"]
    assert adapt._as_list(["a.tif", "b.tif"]) == ["a.tif", "b.tif"] and adapt._as_list("a.tif") == ["a.tif"] and adapt._as_list(None) == []


def test_a_rerun_with_other_settings_is_refused(tmp_path, synthetic_dir):
    adapt._claim_out(tmp_path, {"seed": 0, "budget": "quick"})
    adapt._claim_out(tmp_path, {"seed": 0, "budget": "quick"})  # the same settings resume
    with pytest.raises(FileExistsError, match="seed: 0 now 1"):
        adapt._claim_out(tmp_path, {"seed": 1, "budget": "quick"})


def test_every_benchmark_row_is_a_recipe_and_chains_resolve():
    loaded = recipes.load_recipes()
    steps = [r.name for r in recipes.chain(loaded, "tent_balanced_consistency")]
    assert steps == ["source_only", "adabn_balanced_consistency", "tent_balanced_consistency"]
    assert loaded["tent_balanced_consistency"].eval_configs == ("da/adabn.json", "da/tent.json")
    assert loaded["oracle"].uses_target_labels and not loaded["consistency"].uses_target_labels
    fair, plain = recipes.BUDGETS["cpu_fair"], recipes.BUDGETS["cpu"]
    assert recipes.starts_from(loaded["mmd"], fair) == "source_only" and recipes.starts_from(loaded["mmd"], plain) is None
    assert recipes.starts_from(loaded["oracle"], fair) is None and recipes.starts_from(loaded["self_training"], fair) == "coral"
    assert loaded["dann_joint"].overrides == {"batch_norm_mode": "joint"} and recipes.is_three_d(loaded, "tent_balanced_consistency_3d")


def test_the_snapshot_of_a_candidate_is_the_one_its_training_kept_at_three_quarters(tmp_path):
    """A recipe that does not train (AdaBN) is compared with its start model's snapshot; a given model, a
    training that kept none and a snapshot of another length of training give none."""
    from dataclasses import replace

    loaded = recipes.load_recipes()
    run = recipes.RecipeRun(loaded, tmp_path / "data", recipes.BUDGETS["cpu"], 0, lambda name: tmp_path / name)
    (tmp_path / "source_only" / "models").mkdir(parents=True)
    (tmp_path / "source_only" / "models" / "snapshot_checkpoint_epoch=3.pt").write_bytes(b"")  # of a 4- or 5-epoch training
    assert run.snapshot(loaded["adabn"]) is None
    kept = tmp_path / "source_only" / "models" / "snapshot_checkpoint_epoch=15.pt"  # 3/4 of the cpu budget's 20 epochs
    kept.write_bytes(b"")
    assert run.snapshot(loaded["adabn"]) == kept and run.snapshot(loaded["source_only"]) == kept
    assert run.snapshot(loaded["consistency"]) is None
    assert replace(run, given={"source_only": tmp_path / "given.pt"}).snapshot(loaded["adabn"]) is None


@pytest.mark.parametrize(
    "files, match",
    [
        ({"a": {"kind": "uda", "train": {"configs": []}, "lambda": 1}}, "unknown keys"),
        ({"a": {"kind": "uda", "train": None}}, "start_from"),
        ({"a": {"kind": "uda", "train": {"configs": ["da/nope.json"]}}}, "not found"),
        ({"a": {"kind": "uda", "train": {"configs": []}, "start_from": "b"}, "b": {"kind": "uda", "train": {"configs": []}, "start_from": "a"}}, "circle"),
        ({"a": {"kind": "uda", "train": {"configs": []}, "start_from": "z"}}, "no recipe"),
    ],
)
def test_bad_recipes_are_refused(tmp_path, files, match):
    for name, content in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    with pytest.raises(recipes.RecipeError, match=match):
        recipes.load_recipes(tmp_path)


def test_committed_adapt_runs_match_their_readme():
    """Every recorded real run in results/adapt/ is described by its README with the recorded pick and metrics."""
    results = REPO_ROOT / "results" / "adapt"
    readme = (results / "README.md").read_text()
    records = sorted(results.glob("*.json"))
    assert records
    for path in records:
        record = json.loads(path.read_text())
        assert f"`{path.name}`" in readme and f"![scores]({path.stem}_scores.png)" in readme and (results / f"{path.stem}_scores.png").is_file()
        ious = {n: (m["metrics"] if "metrics" in m else m)["iou"] for n, m in record["target_test_metrics"].items()}
        for name, iou in ious.items():
            s = record["label_free_scores"][name]
            label = f"**{name}** (pick)" if name == record["pick"] else name
            row = f"| {label} | {s[record['rule']]:.3f} | {s['predicted_foreground_fraction']:.3f} | {s['bbse_foreground_fraction']:.3f} | {iou:.3f} |"
            assert row in readme, row


def test_committed_adapt_runs_summaries_follow_from_their_scores_and_metrics():
    """A recorded run's pick is its rule's top score, and its summary fields (regret, rank correlation, best
    candidate, checkpoint agreement's pick) are those ``model_selection`` computes from the record itself."""
    import model_selection

    folder = REPO_ROOT / "results" / "adapt"
    pairs = model_selection.collect_adapt_runs(folder)
    checked = 0
    for path, record, ious in model_selection.adapt_records(folder):
        candidates = next(c for key, c in pairs.items() if key.endswith(f"/{path.stem}"))
        rule = model_selection.pair_statistics(candidates, model_selection.RULES[record["rule"]], record["rule"])
        assert rule["pick"] == record["pick"], path.name
        if "regret" in record:
            assert record["best_on_test_labels"] == max(ious, key=ious.get), path.name
            assert record["regret"] == pytest.approx(rule["regret"]) and record["spearman"] == pytest.approx(rule["spearman"]), path.name
            assert record["source_only_regret"] == pytest.approx(max(ious.values()) - ious["source_only"]), path.name
            checked += 1
        if record.get("checkpoint_agreement"):
            agreement = model_selection.pair_statistics(candidates, model_selection.RULES["checkpoint_agreement"], "checkpoint_agreement")
            assert {k: record["checkpoint_agreement"][k] for k in ("pick", "n")} == {k: agreement[k] for k in ("pick", "n")}, path.name
            assert record["checkpoint_agreement"]["regret"] == pytest.approx(agreement["regret"]), path.name
            assert record["checkpoint_agreement"]["spearman"] == pytest.approx(agreement["spearman"]), path.name
    assert checked >= 10
