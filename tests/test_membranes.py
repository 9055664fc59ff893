"""The em_membranes bundle: ISBI 2012 reader and polarity, V_rand/V_info metric, bundle runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
from ignite.engine import Engine

from custom.data import SOURCE_MICROSCOPE, EMDataError, synthesize_volume
from custom.data.datasets import load_isbi2012
from custom.metrics import ISBIScores, cells_from_membrane_mask

from .conftest import BUNDLES, REPO_ROOT, run_bundle

FAST = ("--max_epochs", "1", "--iterations_per_epoch", "2", "--val_interval", "1", "--patch_size", "[64,64]", "--batch_size", "2")
MEMBRANES = BUNDLES / "em_membranes" / "configs"
# Keys in which the membrane bundle's configs may differ from the mitochondria bundle's.
TASK_KEYS = {"train.json": {"data_root"}, "inference.json": {"data_root"}, "evaluate.json": {"imports", "metrics", "evaluator"}}


def _challenge_labels(shape=(3, 32, 32)) -> np.ndarray:
    """ISBI-style labels: 255 = cell, 0 = a membrane cross through every section."""
    labels = np.full(shape, 255, np.uint8)
    labels[:, 15:17, :] = labels[:, :, 15:17] = 0
    return labels


def test_isbi_tiffs_are_read_with_membrane_as_foreground(tmp_path):
    folder = tmp_path / "isbi2012"
    folder.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8)
    tifffile.imwrite(folder / "train-volume.tif", image)
    tifffile.imwrite(folder / "train-labels.tif", _challenge_labels())
    read_image, label, spacing = load_isbi2012(tmp_path)
    np.testing.assert_array_equal(read_image, image)
    np.testing.assert_array_equal(label, (_challenge_labels() == 0).astype(np.uint8))
    assert spacing == (50.0, 4.0, 4.0)


def test_isbi_h5_copy_is_read_the_same_way(tmp_path):
    (tmp_path / "isbi2012").mkdir()
    with h5py.File(tmp_path / "isbi2012" / "isbi.h5", "w") as f:
        f["raw"] = np.zeros((3, 32, 32), np.uint8)
        f["labels/membranes"] = _challenge_labels()
    _, label, _ = load_isbi2012(tmp_path)
    assert label.dtype == np.uint8 and label[0, 16, 0] == 1 and label[0, 0, 0] == 0


@pytest.mark.parametrize(
    "labels, message",
    [(255 - _challenge_labels(), "look inverted"), (_challenge_labels() // 255, r"not in the value map")],
)
def test_isbi_labels_of_the_wrong_polarity_or_values_are_refused(tmp_path, labels, message):
    folder = tmp_path / "isbi2012"
    folder.mkdir()
    tifffile.imwrite(folder / "train-volume.tif", np.zeros(labels.shape, np.uint8))
    tifffile.imwrite(folder / "train-labels.tif", labels)
    with pytest.raises(EMDataError, match=message):
        load_isbi2012(tmp_path)


def test_missing_isbi_data_says_how_to_get_it(tmp_path):
    with pytest.raises(EMDataError, match="download=True"):
        load_isbi2012(tmp_path)


def test_synthetic_membrane_labels_lie_on_the_dark_cell_boundaries():
    image, membranes, _ = synthesize_volume(SOURCE_MICROSCOPE, n_sections=1, extent_nm=800.0, seed=2, structure="membranes")
    assert 0.01 < membranes.mean() < 0.2
    assert image[membranes == 1].mean() < image[membranes == 0].mean() - 30
    cells = cells_from_membrane_mask(membranes[0])
    assert cells.max() >= 3  # the membranes close into several cells


def test_a_synthetic_folder_holding_another_structure_is_generated_again(tmp_path):
    from custom.data import ensure_synthetic_dataset, read_label

    root = tmp_path / "synthetic"
    ensure_synthetic_dataset(root, n_sections=1, extent_nm=600.0)
    mitochondria = read_label(root / "volumes" / "source" / "source_label.tif")[0]
    ensure_synthetic_dataset(root, n_sections=1, extent_nm=600.0, structure="membranes")
    membranes = read_label(root / "volumes" / "source" / "source_label.tif")[0]
    assert json.loads((root / "synthetic.json").read_text())["structure"] == "membranes"
    assert not np.array_equal(mitochondria, membranes)
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    ensure_synthetic_dataset(root, n_sections=1, extent_nm=600.0, structure="membranes")  # same parameters: reused
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp


def test_isbi_metric_scores_a_perfect_and_a_merging_prediction():
    membrane = (_challenge_labels()[:1] == 0).astype(np.float32)  # (1, Y, X) -> one section
    label = torch.from_numpy(np.stack([1 - membrane, membrane]))
    merged = membrane.copy()
    merged[:, :15, 15:17] = 0  # one membrane segment missed: two cells merge
    outputs = [torch.from_numpy(np.stack([1 - m, m])) for m in (membrane, merged)]
    scores = []
    for pred in outputs:
        engine = Engine(lambda e, b: ([pred], [label]))
        ISBIScores().attach(engine, "isbi")
        scores.append(engine.run([0], max_epochs=1).metrics)
    assert scores[0]["v_rand"] == pytest.approx(1.0) and scores[0]["v_info"] == pytest.approx(1.0)
    assert scores[1]["v_rand"] < 0.9 and scores[1]["v_info"] < 0.95


@pytest.mark.parametrize("name", sorted(TASK_KEYS))
def test_membrane_configs_differ_from_the_mitochondria_bundle_only_in_task_keys(name):
    """The bundles are self-contained (Model Zoo layout), so configs are repeated; this keeps them in step."""
    ours = json.loads((MEMBRANES / name).read_text())
    theirs = json.loads((BUNDLES / "em_mitochondria" / "configs" / name).read_text())
    assert ours.keys() == theirs.keys()
    assert {k for k in ours if ours[k] != theirs[k]} == TASK_KEYS[name]


@pytest.fixture(scope="module")
def membrane_data(tmp_path_factory) -> Path:
    from custom.data import ensure_synthetic_dataset

    root = tmp_path_factory.mktemp("membranes") / "synthetic"
    return Path(ensure_synthetic_dataset(root, n_sections=3, extent_nm=1000.0, structure="membranes"))


def test_bundle_trains_infers_and_reports_isbi_scores(tmp_path, membrane_data):
    run_bundle(["train.json"], tmp_path, "--dataset_dir", str(membrane_data), *FAST, bundle="em_membranes")
    for configs in (["inference.json"], ["inference.json", "evaluate.json"]):
        run_bundle(configs, tmp_path, "--dataset_dir", str(membrane_data), "--roi_size", "[64,64]", bundle="em_membranes")
    assert list((tmp_path / "prediction").glob("*_mask.tif"))
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"iou", "dice", "miou", "mdice", "precision", "recall", "v_rand", "v_info"}
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("v_rand", "v_info"))
    assert list((tmp_path / "eval").glob("*_overlay.png"))


def test_mitochondria_da_override_configs_adapt_the_membrane_bundle(tmp_path, membrane_data):
    coral = BUNDLES / "em_mitochondria" / "configs" / "da" / "coral.json"
    result = run_bundle(["train.json", coral], tmp_path, "--dataset_dir", str(membrane_data), *FAST, bundle="em_membranes")
    assert "coral" in (result.stdout + result.stderr).lower()
    assert (tmp_path / "models" / "model_final.pt").exists()


@pytest.mark.realdata
def test_real_vnc_membranes_prepare_train_and_evaluate(shared_data, tmp_path):
    out = tmp_path / "prepared_membranes"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "prepare_data.py"), "membranes", str(shared_data), str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    direction = out / "vnc_membranes_to_vnc_stack2"
    datalist = json.loads((direction / "datalist.json").read_text())
    assert datalist["target_test"] == [] and "label" not in datalist["target_training"][0]
    run_bundle(["train.json"], tmp_path / "b", "--dataset_dir", str(direction), *FAST, bundle="em_membranes")
    overrides = ("--dataset_dir", str(direction), "--roi_size", "[128,128]", "--eval_split", "validation")
    run_bundle(["inference.json", "evaluate.json"], tmp_path / "b", *overrides, bundle="em_membranes")
    metrics = json.loads((tmp_path / "b" / "eval" / "metrics.json").read_text())["metrics"]
    assert {"iou", "v_rand", "v_info"} <= set(metrics)
