"""Label-free selection: the scoring path never reads target labels, ``pick`` chooses among model files,
and ``validate`` computes correlations, regrets and held-out rules from cached cells."""

from __future__ import annotations

import builtins
import io
import json
import shutil
import sys

import pytest
import torch
from custom.data import load_datalist
from custom.engines import NetworkRecord
from custom.networks import UNet

from .conftest import BUNDLE, REPO_ROOT

RESULTS = REPO_ROOT / "results"

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import label_free  # noqa: E402
import model_selection  # noqa: E402


def _model(path, seed: int):
    torch.manual_seed(seed)
    network = UNet(2, channels=(4, 8, 16))
    torch.save({"model": network.state_dict(), "network_record": NetworkRecord(network, 5.0, [64, 64]).state_dict()}, path)
    return path


def test_scoring_never_opens_a_target_label_and_pick_writes_every_score(synthetic_dir, tmp_path, monkeypatch):
    opened = []
    for module in (builtins, io):
        original = module.open

        def recording(file, *args, _original=original, **kwargs):
            opened.append(str(file))
            return _original(file, *args, **kwargs)

        monkeypatch.setattr(module, "open", recording)
    folders = [tmp_path / f"run{i}" / "models" for i in range(3)]  # each model in its training's models/ folder
    for folder in folders:
        folder.mkdir(parents=True)
    models = [str(_model(folder / "model_final.pt", i)) for i, folder in enumerate(folders)]
    shutil.copy(models[1], folders[0] / "snapshot_checkpoint_epoch=3.pt")  # run 0 kept m1's weights at 3/4 of its training
    result = model_selection.pick(*models, dataset_dir=str(synthetic_dir), out=str(tmp_path / "selection"), bundle=str(BUNDLE))
    monkeypatch.undo()
    target_labels = {e["label"] for key in ("target_training", "target_test", "target_volumes") for e in load_datalist(synthetic_dir, key) if "label" in e}
    assert target_labels and not [p for p in opened if p in target_labels or "target_test" in p]
    assert any("target_target_train.tif" in p for p in opened)  # the recording saw the reads
    assert result["pick"] in result["scores"] and all("consensus_agreement" in s for s in result["scores"].values())
    assert json.loads((tmp_path / "selection" / "selection.json").read_text())["pick"] == result["pick"]
    assert "Label-free selection" in (tmp_path / "selection" / "selection.md").read_text()
    # agreement across checkpoints of one run: m0's mask against its snapshot's (m1's weights), none without a snapshot
    assert sorted(result["scores"]) == ["0_run0", "1_run1", "2_run2"]
    masks = {n: label_free.read_zarr(tmp_path / "selection" / n / label_free.TARGET_REGION, "labels/mask/0") > 0 for n in ("0_run0", "1_run1")}
    snapshot_mask = label_free.read_zarr(tmp_path / "selection" / "0_run0" / label_free.SNAPSHOT_TARGET_REGION, "labels/mask/0") > 0
    assert (snapshot_mask == masks["1_run1"]).all()
    assert result["scores"]["0_run0"]["checkpoint_agreement"] == pytest.approx(label_free.balanced_agreement(masks["0_run0"], masks["1_run1"]))
    assert result["scores"]["1_run1"]["checkpoint_agreement"] is None and result["scores"]["2_run2"]["checkpoint_agreement"] is None


def _cell(runs, direction, row, kind, iou, budget="cpu", seed=0, **scores):
    path = runs / budget / direction / row / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"direction": direction, "row": row, "kind": kind, "seed": seed, "metrics_last": {"iou": iou}, "label_free": scores or None}))


def test_validate_correlations_regret_and_held_out_rule(tmp_path):
    runs = tmp_path / "runs"
    for direction in ("vnc_to_fafb", "fafb_to_vnc"):
        for row, kind, iou, im, entropy in (("source_only", "bound", 0.3, 0.1, 0.2), ("a", "uda", 0.5, 0.3, 0.1), ("b", "uda", 0.6, 0.4, 0.4), ("c", "uda", 0.4, 0.2, 0.3)):
            _cell(runs, direction, row, kind, iou, information_maximization=im, prediction_entropy=entropy, predicted_foreground_fraction=0.1, bbse_foreground_fraction=None)
        _cell(runs, direction, "oracle", "bound", 0.9, information_maximization=0.9, prediction_entropy=0.0, predicted_foreground_fraction=0.1)  # not a candidate
        _cell(runs, direction, "scale_match", "uda", 0.8)  # no scores (not deployable): left out
    result = model_selection.validate(runs_dir=str(runs), work_dir=str(tmp_path / "none"), budgets="cpu", later_budgets="", out=str(tmp_path), adapt_runs="")
    im = result["table"]["information_maximization"]["cpu/vnc_to_fafb/seed0"]
    assert im["spearman"] == pytest.approx(1.0) and im["kendall"] == pytest.approx(1.0) and im["regret"] == 0.0 and im["pick"] == "b"
    entropy = result["table"]["negative_entropy"]["cpu/vnc_to_fafb/seed0"]
    assert entropy["pick"] == "a" and entropy["regret"] == pytest.approx(0.1)
    assert result["table"]["bbse_agreement"]["cpu/vnc_to_fafb/seed0"]["regret"] is None  # no estimate: not rankable
    assert result["held_out"]["fafb_to_vnc"] == {"rule": "information_maximization", "chosen_on": ["vnc_to_fafb"], "regret": 0.0, "regrets": {"cpu/fafb_to_vnc/seed0": 0.0}}
    assert (tmp_path / "label_free_selection.png").stat().st_size > 0 and "Held-out" in (tmp_path / "label_free_selection.md").read_text()


def test_a_consensus_among_another_set_of_candidates_is_dropped_from_the_cells(tmp_path):
    runs = tmp_path / "runs"
    among = ["a", "b", "source_only"]
    for row, kind, iou in (("source_only", "bound", 0.3), ("a", "uda", 0.5), ("b", "uda", 0.6)):
        _cell(runs, "vnc_to_fafb", row, kind, iou, prediction_entropy=0.1, consensus_agreement=iou, consensus_among=among)
    pairs = model_selection.collect_pairs(runs, None, ("cpu",))
    assert {n: c["scores"]["consensus_agreement"] for n, c in pairs["cpu/vnc_to_fafb/seed0"].items()} == {"source_only": 0.3, "a": 0.5, "b": 0.6}
    _cell(runs, "vnc_to_fafb", "scale_match", "uda", 0.45)  # a candidate without scores (not deployable) takes no part in it
    assert "consensus_agreement" in model_selection.collect_pairs(runs, None, ("cpu",))["cpu/vnc_to_fafb/seed0"]["a"]["scores"]
    _cell(runs, "vnc_to_fafb", "c", "uda", 0.4, prediction_entropy=0.2)  # a candidate added since: the recorded consensus is not among it
    pairs = model_selection.collect_pairs(runs, None, ("cpu",))
    assert not any("consensus_agreement" in c["scores"] for c in pairs["cpu/vnc_to_fafb/seed0"].values())
    stored = json.loads((runs / "cpu" / "vnc_to_fafb" / "a" / "seed0.json").read_text())["label_free"]
    assert stored == {"prediction_entropy": 0.1}  # written back: the report made from the cells alone agrees


def test_the_consensus_of_a_pair_scored_in_one_work_folder_is_written_into_its_cells(tmp_path, monkeypatch):
    runs, work = tmp_path / "runs", tmp_path / "work"
    outputs = dict.fromkeys(label_free.OUTPUT_SCORES, 0.1)
    for row, kind, iou in (("source_only", "bound", 0.3), ("a", "uda", 0.5), ("b", "uda", 0.6)):
        _cell(runs, "vnc_to_fafb", row, kind, iou, **outputs)
        (work / "cpu" / "vnc_to_fafb" / row / "seed0" / "label_free").mkdir(parents=True)
    _cell(runs, "vnc_to_fafb", "scale_match", "uda", 0.45)  # not deployable: no scores, no segmentation
    monkeypatch.setattr(label_free, "segmentation_complete", lambda path: True)
    monkeypatch.setattr(label_free, "consensus", lambda folders: {name: 0.8 for name in folders})
    model_selection.collect_pairs(runs, work, ("cpu",))
    stored = json.loads((runs / "cpu" / "vnc_to_fafb" / "a" / "seed0.json").read_text())["label_free"]
    assert stored == {**outputs, "consensus_agreement": 0.8, "consensus_among": ["a", "b", "source_only"]}
    served = model_selection.collect_pairs(runs, None, ("cpu",))["cpu/vnc_to_fafb/seed0"]  # a checkout without the work folder
    assert {n: c["scores"].get("consensus_agreement") for n, c in served.items()} == {"source_only": 0.8, "a": 0.8, "b": 0.8, "scale_match": None}


def test_a_run_records_the_consensus_of_its_budget_and_development_pairs_into_their_cells(tmp_path, monkeypatch):
    runs, work = tmp_path / "runs", tmp_path / "work"
    outputs = dict.fromkeys(label_free.OUTPUT_SCORES, 0.1)
    for budget, direction in (("cpu", "vnc_to_fafb"), ("cpu_development", "vnc_to_fafb@coarse_flat")):
        for row, kind, iou in (("source_only", "bound", 0.3), ("a", "uda", 0.5), ("b", "uda", 0.6)):
            _cell(runs, direction, row, kind, iou, budget=budget, **outputs)
            (work / budget / direction / row / "seed0" / "label_free").mkdir(parents=True)
    _cell(runs, "vnc_to_fafb", "a", "uda", 0.5, budget="cpu_long", **outputs)  # another budget: not this run's
    monkeypatch.setattr(label_free, "segmentation_complete", lambda path: True)
    monkeypatch.setattr(label_free, "consensus", lambda folders: {name: 0.8 for name in folders})
    model_selection.record_pair_scores(runs, work, "cpu")
    for budget, direction in (("cpu", "vnc_to_fafb"), ("cpu_development", "vnc_to_fafb@coarse_flat")):
        stored = json.loads((runs / budget / direction / "b" / "seed0.json").read_text())["label_free"]
        assert stored == {**outputs, "consensus_agreement": 0.8, "consensus_among": ["a", "b", "source_only"]}
    assert "consensus_agreement" not in json.loads((runs / "cpu_long" / "vnc_to_fafb" / "a" / "seed0.json").read_text())["label_free"]


def test_pairs_missing_a_score_others_hold_are_tabulated_but_choose_and_judge_nothing(tmp_path):
    runs = tmp_path / "runs"
    for direction in ("vnc_to_fafb", "fafb_to_vnc"):
        for row, kind, iou, im, entropy in (("source_only", "bound", 0.3, 0.1, 0.2), ("a", "uda", 0.5, 0.3, 0.1), ("b", "uda", 0.6, 0.4, 0.4)):
            _cell(runs, direction, row, kind, iou, seed=1, information_maximization=im, prediction_entropy=entropy)
            _cell(runs, direction, row, kind, 1 - iou, seed=0, information_maximization=im)  # recorded before entropy existed
    result = model_selection.validate(runs_dir=str(runs), work_dir=str(tmp_path / "none"), budgets="cpu", later_budgets="", out=str(tmp_path), adapt_runs="")
    assert result["table"]["information_maximization"]["cpu/vnc_to_fafb/seed0"]["regret"] == pytest.approx(0.3)  # tabulated
    assert result["not_comparable"] == ["cpu/fafb_to_vnc/seed0", "cpu/vnc_to_fafb/seed0"]
    held = result["held_out"]["vnc_to_fafb"]
    assert held["rule"] == "information_maximization" and held["regrets"] == {"cpu/vnc_to_fafb/seed1": 0.0}  # seed 0 would have cost 0.3
    assert "Not comparable,\nso tabulated only: cpu/fafb_to_vnc/seed0, cpu/vnc_to_fafb/seed0" in (tmp_path / "label_free_selection.md").read_text()


def test_held_out_rule_is_never_chosen_on_pairs_of_the_held_out_direction(tmp_path):
    """Development pairs and other seeds of a direction belong to its family: they never choose its rule."""
    runs = tmp_path / "runs"
    for direction, im_good in (("vnc_to_fafb", True), ("vnc_to_fafb@coarse", False), ("fafb_to_vnc", False)):
        for row, iou, im, entropy in (("source_only", 0.3, 0.1, 0.3), ("a", 0.5, 0.3, 0.1), ("b", 0.6, 0.4, 0.2)):
            _cell(runs, direction, row, "uda", iou, information_maximization=im if im_good else -im, prediction_entropy=entropy, predicted_foreground_fraction=0.1)
    held = model_selection.validate(runs_dir=str(runs), work_dir=str(tmp_path / "none"), budgets="cpu", later_budgets="", out=str(tmp_path), adapt_runs="")["held_out"]
    # on fafb_to_vnc (the only other family) negative entropy has regret 0.1, IM 0.3: entropy is chosen for vnc_to_fafb
    assert held["vnc_to_fafb"]["rule"] == "negative_entropy" and held["vnc_to_fafb"]["chosen_on"] == ["fafb_to_vnc"]
    assert held["vnc_to_fafb"]["regret"] == pytest.approx(0.1) and set(held["vnc_to_fafb"]["regrets"]) == {"cpu/vnc_to_fafb/seed0", "cpu/vnc_to_fafb@coarse/seed0"}
    assert "misses the goal" in (tmp_path / "label_free_selection.md").read_text()
    # the yardstick: row b is best on fafb_to_vnc, deployed everywhere it is best on vnc_to_fafb too
    fixed = json.loads((tmp_path / "label_free_selection.json").read_text())["fixed_row_held_out"]
    assert fixed["vnc_to_fafb"] == {"row": "b", "regret": 0.0} and "`b`, held-out regret +0.00" in (tmp_path / "label_free_selection.md").read_text()


def test_later_pairs_choose_nothing_and_report_each_fixed_rule(tmp_path):
    """Pairs of ``later_budgets`` are judged by rules fixed on the other pairs, never used to fix them."""
    runs = tmp_path / "runs"
    for direction in ("vnc_to_fafb", "fafb_to_vnc"):  # negative entropy picks the best, IM the worst; c, then b, is best
        for row, iou, im, entropy in (("source_only", 0.3, 0.5, 0.3), ("a", 0.5, 0.3, 0.2), ("b", 0.6, 0.1, 0.1)):
            _cell(runs, direction, row, "uda", iou, information_maximization=im, prediction_entropy=entropy, balanced_rotation_agreement=iou)
        _cell(runs, direction, "c", "uda", 0.7, information_maximization=0.0, prediction_entropy=0.05, balanced_rotation_agreement=0.7)  # best, not a later candidate
    later = (("source_only", 0.4, 0.9, 0.1, 0.4), ("a", 0.7, 0.1, 0.3, 0.2), ("b", 0.5, 0.2, 0.2, 0.6))  # here IM, entropy disagree
    for row, iou, im, entropy, balanced in later:
        _cell(runs, "vnc_to_fafb", row, "uda", iou, budget="cpu_long", information_maximization=im, prediction_entropy=entropy, balanced_rotation_agreement=balanced)
    for row, iou in (("source_only", 0.5), ("b", 0.4)):  # a seed still training: a has no cell yet
        _cell(runs, "vnc_to_fafb", row, "uda", iou, budget="cpu_long", seed=1, information_maximization=0.1, prediction_entropy=0.1, balanced_rotation_agreement=iou)
    adapt = tmp_path / "adapt"  # a recorded adapt.py run (metrics as the evaluation writes them), and one without --evaluate
    adapt.mkdir()
    (adapt / "run.json").write_text(json.dumps({
        "family": "membranes", "target_shift": "coarse",
        "target_test_metrics": {n: {"metrics": {"iou": iou}} for n, iou in (("source_only", 0.6), ("tent", 0.8), ("a", 0.7))},
        "label_free_scores": {n: {"prediction_entropy": 0.1, "balanced_rotation_agreement": b} for n, b in (("source_only", 0.9), ("tent", 0.95), ("a", 0.97))},
    }))  # fmt: skip
    (adapt / "unlabelled.json").write_text(json.dumps({"label_free_scores": {}}))
    result = model_selection.validate(runs_dir=str(runs), work_dir=str(tmp_path / "none"), budgets="cpu", out=str(tmp_path), later_budgets="cpu_long", adapt_runs=str(adapt))
    assert set(result["pairs"]) == {"cpu/vnc_to_fafb/seed0", "cpu/fafb_to_vnc/seed0"}  # the later pairs choose nothing
    assert set(result["prospective"]) == {"cpu_long/vnc_to_fafb/seed0", "adapt/membranes@coarse/run"} and result["prospective_unfinished"] == {"cpu_long/vnc_to_fafb/seed1": "2 of 3"}
    run = result["prospective"]["adapt/membranes@coarse/run"]
    assert run["best"] == "tent" and run["adapt.py rule"]["pick"] == "a" and run["adapt.py rule"]["regret"] == pytest.approx(0.1)
    assert run["overall rule"]["rule"] == "negative_entropy" and run["overall rule"]["spearman"] is None  # a constant score ranks nothing
    entry = result["prospective"]["cpu_long/vnc_to_fafb/seed0"]
    assert entry["n"] == 3 and entry["best"] == "a"
    assert entry["adapt.py rule"] == {"rule": model_selection.PICK_RULE, "pick": "b", "regret": pytest.approx(0.2), "spearman": pytest.approx(-0.5)}
    assert entry["overall rule"]["rule"] == "negative_entropy" and entry["overall rule"]["pick"] == "source_only"  # entropy 0.1 lowest
    assert entry["overall rule"]["regret"] == pytest.approx(0.3)
    assert entry["fixed row"] == {"rule": None, "pick": "b", "regret": pytest.approx(0.2)}  # the best earlier row among the later candidates
    assert entry["no adaptation"]["regret"] == pytest.approx(0.3)
    # the held-out step chose negative entropy for vnc_to_fafb (on fafb_to_vnc); it has no rule for the membranes family
    assert entry["held-out rule"]["rule"] == result["held_out"]["vnc_to_fafb"]["rule"] == "negative_entropy" and entry["held-out rule"]["pick"] == "source_only"
    assert run["held-out rule"] == {"rule": None, "pick": None, "regret": None, "spearman": None}
    assert "## Prospective pairs" in (tmp_path / "label_free_selection.md").read_text()


def test_a_later_pair_is_picked_by_the_rule_held_out_for_its_own_direction():
    """Each later pair gets the rule the held-out step chose for its family, not another family's."""
    candidates = {n: {"iou": iou, "scores": {"information_maximization": im, "prediction_entropy": e}} for n, iou, im, e in
                  (("source_only", 0.4, 0.1, 0.1), ("a", 0.6, 0.3, 0.3), ("b", 0.5, 0.2, 0.2))}  # fmt: skip
    held = {"vnc_to_fafb": {"rule": "information_maximization"}, "fafb_to_vnc": {"rule": "negative_entropy"}}
    later = {"cpu_long/vnc_to_fafb/seed2": candidates, "cpu_long/fafb_to_vnc/seed2": candidates}
    result = model_selection.prospective({"cpu/vnc_to_fafb/seed0": candidates}, later, held)
    assert result["cpu_long/vnc_to_fafb/seed2"]["held-out rule"] == {"rule": "information_maximization", "pick": "a", "regret": 0.0, "spearman": pytest.approx(1.0)}
    assert result["cpu_long/fafb_to_vnc/seed2"]["held-out rule"]["pick"] == "source_only"
    assert result["cpu_long/fafb_to_vnc/seed2"]["held-out rule"]["regret"] == pytest.approx(0.2)


def test_lead_calibration_counts_how_often_a_lead_orders_two_candidates_by_iou(tmp_path):
    """Each two candidates of a pair fall in the bin of their score difference; equal scores are left out."""
    rule = model_selection.PICK_RULE
    pairs = {
        "cpu/vnc_to_fafb/seed0": {n: {"iou": iou, "scores": {model_selection.RULE_SCORES[rule]: s}} for n, iou, s in
                                  (("a", 0.50, 0.900), ("b", 0.60, 0.902), ("c", 0.40, 0.930), ("twin", 0.45, 0.930))},
        "cpu/fafb_to_vnc/seed0": {n: {"iou": iou, "scores": {model_selection.RULE_SCORES[rule]: s}} for n, iou, s in (("a", 0.3, 0.56), ("b", 0.2, 0.5))},
    }  # fmt: skip
    calibration = model_selection.lead_calibration(pairs)
    bins = {b["lower"]: b for b in calibration["bins"]}
    # differences: a-b 0.002 (b higher and better); c and twin lead a and b by 0.028-0.03 and are worse; c-twin 0 (left
    # out); the other pair's a leads b by 0.06 and is better
    assert bins[0.0] == {"lower": 0.0, "upper": 0.005, "n": 1, "ordered": 1.0, "iou_difference": pytest.approx(0.1), "iou_gap": pytest.approx(0.1)}
    assert bins[0.02]["n"] == 4 and bins[0.02]["ordered"] == 0.0 and bins[0.02]["iou_difference"] == pytest.approx(-0.125)
    assert bins[0.05]["upper"] is None and bins[0.05]["n"] == 1 and bins[0.05]["ordered"] == 1.0
    assert bins[0.005]["n"] == bins[0.01]["n"] == 0 and bins[0.01]["ordered"] is None and calibration["pairs"] == 2
    path = tmp_path / "label_free_selection.json"
    path.write_text(json.dumps({"lead_calibration": calibration}))
    import adapt_report

    assert adapt_report.validated_lead(rule, 0.03, path)["lower"] == 0.02 and adapt_report.validated_lead(rule, 0.012, path) is None  # empty bin
    assert adapt_report.validated_lead("consensus_agreement", 0.03, path) is None and adapt_report.validated_lead(rule, 0.03, tmp_path / "absent.json") is None


def test_recorded_adapt_runs_join_the_held_out_step_as_pairs_of_their_families(tmp_path):
    """A run on a direction's data is a real pair of that direction; a run on another task's re-imaged
    target is a development pair of a third family, held out in its turn (regret over its pairs)."""
    runs, adapt = tmp_path / "runs", tmp_path / "adapt"
    for direction in ("vnc_to_fafb", "fafb_to_vnc"):  # entropy picks the best on both directions, IM the worst
        for row, iou, im, entropy in (("source_only", 0.3, 0.5, 0.3), ("a", 0.5, 0.3, 0.2), ("b", 0.6, 0.1, 0.1)):
            _cell(runs, direction, row, "uda", iou, information_maximization=im, prediction_entropy=entropy)
    adapt.mkdir()
    for name, family, shift, ious in (("real", "vnc_to_fafb", None, (0.2, 0.3, 0.4)), ("membranes", "membranes", "coarse", (0.9, 0.6, 0.3))):
        scores = {n: {"information_maximization": im, "prediction_entropy": e} for n, im, e in (("source_only", 0.5, 0.3), ("a", 0.3, 0.2), ("b", 0.1, 0.1))}
        metrics = {n: {"iou": iou} for n, iou in zip(scores, ious)}
        (adapt / f"{name}.json").write_text(json.dumps({"family": family, "target_shift": shift, "target_test_metrics": metrics, "label_free_scores": scores}))
    result = model_selection.validate(runs_dir=str(runs), work_dir=str(tmp_path / "none"), budgets="cpu", later_budgets="", out=str(tmp_path), adapt_runs=str(adapt))
    assert set(result["held_out"]) == {"vnc_to_fafb", "fafb_to_vnc"}  # the two-family result is unchanged by the records
    both = result["held_out_with_adapt_runs"]
    assert set(both) == {"vnc_to_fafb", "fafb_to_vnc", "membranes"} and both["vnc_to_fafb"]["chosen_on"] == ["fafb_to_vnc", "membranes"]
    # entropy loses 0.6 on the membranes pair, IM 0.3 on fafb_to_vnc: over both, IM (0.15) beats entropy (0.3) for vnc_to_fafb
    assert result["held_out"]["vnc_to_fafb"]["rule"] == "negative_entropy"  # chosen on fafb_to_vnc alone
    assert both["vnc_to_fafb"]["rule"] == "information_maximization" and set(both["vnc_to_fafb"]["regrets"]) == {"cpu/vnc_to_fafb/seed0", "adapt/vnc_to_fafb/real"}
    assert both["vnc_to_fafb"]["regret"] == pytest.approx((0.3 + 0.2) / 2)  # the mean over the family's two real pairs
    assert both["membranes"]["rule"] == "negative_entropy" and both["membranes"]["regret"] == pytest.approx(0.6)  # its only pair, a development one
    assert "The same step with the recorded `adapt.py` runs" in (tmp_path / "label_free_selection.md").read_text()


def test_checkpoint_agreement_ranks_the_pairs_that_recorded_it_and_never_makes_the_others_incomparable(tmp_path):
    """Cells trained before the snapshot existed lack checkpoint agreement: they stay comparable (and keep their
    held-out result), the rule is chosen nowhere while a pair lacks it, and it is reported on the later pairs."""
    runs, adapt = tmp_path / "runs", tmp_path / "adapt"
    for direction in ("vnc_to_fafb", "fafb_to_vnc"):  # entropy picks the best on both directions
        for row, iou, entropy in (("source_only", 0.3, 0.3), ("a", 0.5, 0.2), ("b", 0.6, 0.1)):
            _cell(runs, direction, row, "uda", iou, prediction_entropy=entropy)
            _cell(runs, direction, row, "uda", iou, budget="cpu_long", prediction_entropy=entropy, checkpoint_agreement=1 - entropy)
    adapt.mkdir()
    scores = {n: {"prediction_entropy": 0.1, "checkpoint_agreement": c} for n, c in (("source_only", None), ("a", 0.9), ("b", 0.8))}
    metrics = {n: {"iou": iou} for n, iou in (("source_only", 0.3), ("a", 0.7), ("b", 0.4))}
    (adapt / "run.json").write_text(json.dumps({"family": "vnc_to_fafb", "target_shift": None, "target_test_metrics": metrics, "label_free_scores": scores}))
    result = model_selection.validate(runs_dir=str(runs), work_dir=str(tmp_path / "none"), budgets="cpu", later_budgets="cpu_long", out=str(tmp_path), adapt_runs=str(adapt))
    assert result["not_comparable"] == [] and result["held_out"]["vnc_to_fafb"]["rule"] == "negative_entropy"
    assert all(h["rule"] != "checkpoint_agreement" for h in result["held_out_with_adapt_runs"].values())
    later = result["prospective_table"]["checkpoint_agreement"]
    assert later["cpu_long/vnc_to_fafb/seed0"]["regret"] == pytest.approx(0.0) and later["adapt/vnc_to_fafb/run"]["regret"] is None  # 2 ranked
    assert result["table"]["checkpoint_agreement"]["cpu/vnc_to_fafb/seed0"]["regret"] is None
    assert "Every rule on the complete prospective pairs" in (tmp_path / "label_free_selection.md").read_text()


def test_pick_defaults_to_the_rule_adapt_picks_with():
    import inspect

    assert inspect.signature(model_selection.pick).parameters["rule"].default == model_selection.PICK_RULE
    with pytest.raises(SystemExit, match="at least 2 models"):
        model_selection.pick("a.pt", dataset_dir="d", out="o")
    with pytest.raises(SystemExit, match="at least 3 models"):
        model_selection.pick("a.pt", "b.pt", dataset_dir="d", out="o", rule="consensus_agreement")


def test_a_rule_whose_score_a_candidate_never_recorded_does_not_rank_the_pair():
    candidates = {n: {"iou": iou, "scores": {"prediction_entropy": e, **({"rotation_agreement": r} if r is not None else {})}}
                  for n, iou, e, r in (("a", 0.5, 0.1, 0.9), ("b", 0.6, 0.2, 0.8), ("c", 0.4, 0.3, None), ("d", 0.3, 0.4, 0.7))}  # fmt: skip
    rotation = model_selection.RULES["rotation_agreement"]
    assert model_selection.pair_statistics(candidates, rotation, "rotation_agreement")["regret"] is None
    assert model_selection.pair_statistics(candidates, rotation)["regret"] == pytest.approx(0.1)  # without the key: over those that have it
    assert set(model_selection.RULE_SCORES) == set(model_selection.RULES)


def test_validate_says_when_no_cell_has_scores(tmp_path):
    _cell(tmp_path / "runs", "vnc_to_fafb", "a", "uda", 0.5)
    with pytest.raises(SystemExit, match="records label-free scores"):
        model_selection.validate(runs_dir=str(tmp_path / "runs"), work_dir=str(tmp_path / "none"), budgets="cpu", later_budgets="", out=str(tmp_path), adapt_runs="")


def test_only_deployable_recipes_are_scored():
    from recipes import load_recipes

    recipes = load_recipes()
    assert label_free.deployable(recipes["tent_balanced_consistency"]) and label_free.deployable(recipes["consistency_tta"])
    assert not label_free.deployable(recipes["scale_match"])


def test_batch_norm_default_is_the_variant_the_overall_rule_ranks_first_on_most_real_pairs(tmp_path):
    runs = tmp_path / "runs"
    for direction in ("vnc_to_fafb", "fafb_to_vnc"):
        # negative entropy ranks every pair perfectly (regret 0): it is the rule; the joint variant has the lowest entropy
        for row, iou, entropy in (("source_only", 0.3, 0.5), ("mmd", 0.4, 0.4), ("mmd_joint", 0.6, 0.1), ("mmd_dsbn", 0.5, 0.2), ("coral", 0.45, 0.3)):
            path = runs / "cpu_fair" / direction / row / "seed0.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"direction": direction, "row": row, "kind": "uda", "seed": 0, "metrics_last": {"iou": iou}, "label_free": {"prediction_entropy": entropy}}))
    result = model_selection.batch_norm_modes(runs_dir=str(runs), work_dir=str(tmp_path / "none"), out=str(tmp_path), adapt_runs="")
    assert result["rule"] == "negative_entropy"
    assert result["methods"]["mmd"]["default"] == "joint" and result["methods"]["mmd"]["votes"]["joint"] == 2
    assert "coral" not in result["methods"]  # one variant only: nothing to choose
    assert "| mmd | joint |" in (tmp_path / "batch_norm_modes.md").read_text()
    # the other direction's lowest entropy moves to the DSBN variant: one vote each, a tie keeps separate
    path = runs / "cpu_fair" / "fafb_to_vnc" / "mmd_dsbn" / "seed0.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "label_free": {"prediction_entropy": 0.05}, "metrics_last": {"iou": 0.7}}))
    tied = model_selection.batch_norm_modes(runs_dir=str(runs), work_dir=str(tmp_path / "none"), out=str(tmp_path), adapt_runs="")["methods"]["mmd"]
    assert tied["votes"]["joint"] == tied["votes"]["domain_specific"] == 1 and tied["default"] == "separate"


def test_the_committed_reports_are_reproduced_from_the_committed_cells_alone(tmp_path):
    """What a clean checkout gives (no benchmark work folder): the committed label-free and batch-norm reports."""
    runs = tmp_path / "runs"
    shutil.copytree(RESULTS / "runs", runs)
    model_selection.validate(runs_dir=str(runs), work_dir=str(tmp_path / "none"), out=str(tmp_path))  # the defaults
    model_selection.batch_norm_modes(runs_dir=str(runs), work_dir=str(tmp_path / "none"), out=str(tmp_path))
    for name in ("label_free_selection.md", "label_free_selection.json", "batch_norm_modes.md", "batch_norm_modes.json"):
        assert (tmp_path / name).read_text() == (RESULTS / name).read_text(), f"{name}: regenerate it (model_selection.py validate; batch_norm_modes) and commit it with the cells"
