"""Development pairs: a direction's cached candidates deployed on its target re-imaged, scored and evaluated."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import tifffile
import torch
from custom.data import load_datalist
from custom.engines import NetworkRecord
from custom.metrics import dice_agreement
from custom.networks import UNet

from .conftest import BUNDLE, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import development_pairs  # noqa: E402
import label_free  # noqa: E402
import model_selection  # noqa: E402


def _cell(runs, row, kind, **extra):
    path = runs / "synthetic" / "vnc_to_fafb" / row / "seed0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"direction": "vnc_to_fafb", "row": row, "kind": kind, "seed": 0, "revisions": {row: 1}, "label_free": {"prediction_entropy": 0.1}, "metrics_last": {"iou": 0.5}, **extra}))


@pytest.fixture()
def benchmark_tree(synthetic_dir, tmp_path):
    """A benchmark work folder whose vnc_to_fafb direction is the synthetic pair, with a trained source-only model."""
    work, runs = tmp_path / "work", tmp_path / "runs"
    (work / "prepared").mkdir(parents=True)
    (work / "prepared" / "prepared.json").write_text("{}")
    (work / "prepared" / "vnc_to_fafb").symlink_to(synthetic_dir)
    root = work / "synthetic" / "vnc_to_fafb" / "source_only" / "seed0"
    (root / "models").mkdir(parents=True)
    torch.manual_seed(0)
    network = UNet(2, channels=(4, 8, 16))
    torch.save({"model": network.state_dict(), "network_record": NetworkRecord(network, 5.0, [128, 128]).state_dict()}, root / "models" / "model_final.pt")
    (root / "training_complete").write_text(json.dumps({"epochs": 6}))
    _cell(runs, "source_only", "bound")
    _cell(runs, "adabn", "uda")
    _cell(runs, "oracle", "bound")  # uses target labels: never a candidate
    return work, runs


def test_dataset_reimages_only_the_target_and_is_kept(synthetic_dir, tmp_path):
    out = development_pairs.build_dataset(synthetic_dir, "coarse_flat", tmp_path / "dev")
    for key in ("training", "validation"):
        assert load_datalist(out, key) == [{k: str(Path(v).resolve()) for k, v in e.items()} for e in load_datalist(synthetic_dir, key)]
    for key in ("target_training", "target_test"):
        (old,), (new,) = load_datalist(synthetic_dir, key), load_datalist(out, key)
        before, after = tifffile.imread(old["image"]), tifffile.imread(new["image"])
        assert after.shape[-1] == pytest.approx(before.shape[-1] / 1.6, abs=1) and tifffile.imread(new["label"]).shape == after.shape
    assert load_datalist(out, "target_volumes") == [{"image": load_datalist(out, "target_training")[0]["image"]}]
    stamp = (out / "volumes").stat().st_mtime_ns
    development_pairs.build_dataset(synthetic_dir, "coarse_flat", tmp_path / "dev")  # kept, not rebuilt
    assert (out / "volumes").stat().st_mtime_ns == stamp


def test_candidates_are_deployed_scored_and_evaluated_on_the_reimaged_target(benchmark_tree, monkeypatch):
    work, runs = benchmark_tree
    monkeypatch.chdir(work.parent)
    work = work.relative_to(work.parent)  # as the benchmark passes it: relative to the working directory
    recorded = []  # the run ends by writing what only its work folder gives into the cells
    monkeypatch.setattr(development_pairs, "record_pair_scores", lambda *args: recorded.append(args) or model_selection.record_pair_scores(*args))
    cells = development_pairs.run(budget="synthetic", shifts="fine_noisy", directions="vnc_to_fafb", work_dir=str(work), runs_dir=str(runs))
    assert sorted(c["row"] for c in cells) == ["adabn", "source_only"] and recorded == [(runs, work, "synthetic")]
    for cell in cells:
        assert cell["direction"] == "vnc_to_fafb@fine_noisy" and 0 <= cell["metrics_last"]["iou"] <= 1
        assert set(cell["label_free"]) >= {"prediction_entropy", "information_maximization", "bbse_foreground_fraction", "rotation_agreement", "network_rotation_agreement", "balanced_rotation_agreement", "dev_risk", "iwcv_risk"}
    adabn = work.resolve() / "synthetic_development" / "vnc_to_fafb@fine_noisy" / "adabn" / "seed0" / "label_free" / "model.pt"
    assert adabn.exists()  # AdaBN re-adapted on the re-imaged target, not copied
    # cached: a second run serves the same cells; validate reads them beside the real ones as the direction's family
    assert development_pairs.run(budget="synthetic", shifts="fine_noisy", directions="vnc_to_fafb", work_dir=str(work), runs_dir=str(runs)) == cells
    pairs = model_selection.collect_pairs(runs, work, ("synthetic", "synthetic_development"))
    assert set(pairs) == {"synthetic/vnc_to_fafb/seed0", "synthetic_development/vnc_to_fafb@fine_noisy/seed0"}
    assert {model_selection.family(p) for p in pairs} == {"vnc_to_fafb"}
    # a score added after a cell was computed is recomputed from the cell's kept segmentation
    path = runs / "synthetic_development" / "vnc_to_fafb@fine_noisy" / "adabn" / "seed0.json"
    cell = json.loads(path.read_text())
    removed = ("batch_nuclear_norm", "rotation_agreement", "network_rotation_agreement", "balanced_rotation_agreement", "dev_risk", "iwcv_risk", "source_validation_loss")
    path.write_text(json.dumps({**cell, "label_free": {k: v for k, v in cell["label_free"].items() if k not in removed}}))
    folder = work / "synthetic_development" / "vnc_to_fafb@fine_noisy" / "adabn" / "seed0" / "label_free"
    rotated = folder / "target_region_rotated.zarr"
    shutil.rmtree(rotated)  # segmented again with the deployed model
    (folder / label_free.DEV_RECORD).unlink()  # and DEV computed again
    pair = "synthetic_development/vnc_to_fafb@fine_noisy/seed0"
    scores = model_selection.collect_pairs(runs, work, ("synthetic_development",))[pair]["adabn"]["scores"]
    assert "rotation_agreement" not in scores and "dev_risk" not in scores  # the model is not run again unless asked
    scores = model_selection.collect_pairs(runs, work, ("synthetic_development",), compute=("rotation_agreement", "dev"))[pair]["adabn"]["scores"]
    assert scores["batch_nuclear_norm"] == pytest.approx(cell["label_free"]["batch_nuclear_norm"])
    assert scores["rotation_agreement"] == pytest.approx(cell["label_free"]["rotation_agreement"]) and rotated.exists()
    assert scores["dev_risk"] == pytest.approx(cell["label_free"]["dev_risk"]) and scores["iwcv_risk"] == pytest.approx(cell["label_free"]["iwcv_risk"])
    served = model_selection.collect_pairs(runs, work, ("synthetic_development",))[pair]["adabn"]["scores"]  # kept now: no compute needed
    assert {k: served[k] for k in removed} == pytest.approx({k: scores[k] for k in removed})
    # and written into the cell: a checkout without the work folder serves them too
    clean = model_selection.collect_pairs(runs, None, ("synthetic_development",))[pair]["adabn"]["scores"]
    assert {k: clean[k] for k in removed} == pytest.approx({k: scores[k] for k in removed})
    with pytest.raises(SystemExit, match="cannot compute.*rotation"):
        model_selection.validate(runs_dir=str(runs), work_dir=str(work), budgets="synthetic", later_budgets="", compute="rotaton_agreement")


def test_a_candidate_whose_training_is_missing_is_refused(benchmark_tree):
    work, runs = benchmark_tree
    _cell(runs, "mmd", "uda")
    with pytest.raises(SystemExit, match="mmd.*not under"):
        development_pairs.run(budget="synthetic", shifts="fine_noisy", directions="vnc_to_fafb", work_dir=str(work), runs_dir=str(runs))


def test_rotation_agreement_resumes_a_killed_rotated_segmentation(synthetic_dir, checkpoint, tmp_path, monkeypatch):
    """A run killed while it segments the rotated target region is resumed by the next one (it was
    refused as another run's output when the rotated input lay in a fresh temporary folder each time)."""
    from custom.inference.zarr_output import ZarrSegmentation

    deployed, folder = {"checkpoint": checkpoint, "tta": False}, tmp_path / "label_free"
    target_region = load_datalist(synthetic_dir, "target_training", required=True)[0]["image"]
    label_free.segment(deployed, target_region, folder / label_free.TARGET_REGION, BUNDLE, "cpu")

    def killed(self):
        raise KeyboardInterrupt("killed after the last block, before the output was marked complete")

    with monkeypatch.context() as patch:
        patch.setattr(ZarrSegmentation, "mark_complete", killed)
        with pytest.raises(KeyboardInterrupt):
            dice_agreement(*label_free.rotation_masks(deployed, folder, target_region, BUNDLE, "cpu"))
    assert not label_free.segmentation_complete(folder / label_free.ROTATED_REGION)
    resumed = dice_agreement(*label_free.rotation_masks(deployed, folder, target_region, BUNDLE, "cpu"))
    assert label_free.segmentation_complete(folder / label_free.ROTATED_REGION) and not (folder / label_free.ROTATED_REGION).with_suffix(".tif").exists()
    shutil.rmtree(folder / label_free.ROTATED_REGION)
    assert dice_agreement(*label_free.rotation_masks(deployed, folder, target_region, BUNDLE, "cpu")) == pytest.approx(resumed)  # as uninterrupted
    # the same network deployed with TTA: its network's agreement is its plain twin's, in its own files
    with_tta, twin = {**deployed, "tta": True}, tmp_path / "twin"
    twin.mkdir()
    assert dice_agreement(*label_free.rotation_masks(with_tta, twin, target_region, BUNDLE, "cpu", network=True)) == pytest.approx(resumed)
    assert label_free.kept_scores(with_tta, twin) == ()  # the TTA prediction itself was not made: not a kept rotation score

