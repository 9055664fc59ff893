"""Crash safety, determinism and the bad inputs of docs/reliability.md not covered next to their module."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from custom.data import write_volume
from custom.engines.utils import read_model_state
from custom.utils import check_output_path

from .conftest import CONFIGS, kill_after_first_epoch, run_bundle

REPO = Path(__file__).resolve().parents[1]
SMALL = ("--patch_size", "[64,64]", "--batch_size", "2")


def test_training_killed_mid_epoch_resumes_to_the_same_iteration(tmp_path, synthetic_dir):
    budget = ("--dataset_dir", str(synthetic_dir), "--max_epochs", "3", "--iterations_per_epoch", "40", "--val_interval", "10", *SMALL)
    kill_after_first_epoch([CONFIGS / "train.json"], tmp_path, *budget)
    torch.load(tmp_path / "models" / "train_checkpoint_epoch=1.pt", weights_only=True)  # the checkpoint on disk is complete (atomic write)

    run_bundle(["train.json"], tmp_path, *budget, "--resume", "true")
    last = torch.load(tmp_path / "models" / "train_checkpoint_epoch=3.pt", weights_only=True)["trainer"]
    assert last["epoch_length"] == 40 and last["iteration"] == 3 * 40
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model_final.pt", "snapshot_checkpoint_epoch=2.pt", "train_checkpoint_epoch=3.pt"]


def test_a_fresh_run_beside_a_longer_killed_run_replaces_its_checkpoints(tmp_path, synthetic_dir):
    """A leftover higher-epoch checkpoint must neither be kept over this run's nor break Ignite's pruning."""
    models = tmp_path / "models"
    models.mkdir(parents=True)
    leftover = models / "train_checkpoint_epoch=6.pt"
    torch.save({"stale": torch.zeros(1)}, leftover)
    budget = ("--dataset_dir", str(synthetic_dir), "--max_epochs", "3", "--iterations_per_epoch", "2", "--val_interval", "10", *SMALL)
    run_bundle(["train.json"], tmp_path, *budget)
    assert sorted(p.name for p in models.iterdir()) == ["model_final.pt", "snapshot_checkpoint_epoch=2.pt", "train_checkpoint_epoch=3.pt"]


def test_same_seed_gives_identical_training(tmp_path, synthetic_dir):
    budget = ("--dataset_dir", str(synthetic_dir), "--max_epochs", "2", "--iterations_per_epoch", "3", "--val_interval", "1", "--seed", "3", *SMALL)
    metrics, states = [], []
    for run in ("a", "b"):
        result = run_bundle(["train.json"], tmp_path / run, *budget)
        metrics.append(re.findall(r"val_iou: ([0-9.]+)", result.stdout + result.stderr))
        states.append(read_model_state(tmp_path / run / "models" / "model_final.pt"))
    assert metrics[0] and metrics[0] == metrics[1]
    for name, value in states[0].items():
        torch.testing.assert_close(value, states[1][name], rtol=0, atol=0)


@pytest.mark.parametrize(
    "command, message",
    [
        (["scripts/demo.py", "--method", "fda"], "unknown method 'fda'; choose from mmd"),
        (["scripts/benchmark_da.py", "run", "--rows", "dan"], "unknown row or direction 'dan'; choose from source_only"),
        (["scripts/finetune_study.py", "run", "--variants", "nope"], "unknown variant(s) ['nope']; choose from ['baseline'"),
        (["scripts/benchmark_instances.py", "run", "--datasets", "nope"], "unknown dataset(s) ['nope']; choose from ['dsb2018_nuclei'"),
    ],
)
def test_unknown_method_name_is_refused_with_the_choices(command, message, tmp_path):
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_output_folder_is_refused_before_anything_is_written(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    target = blocker / "out" / "mask.tif"
    with pytest.raises(PermissionError, match="Cannot create the output folder .*not_a_folder/out"):
        check_output_path(target)
    with pytest.raises(PermissionError, match="not_a_folder"):
        write_volume(target, np.zeros((2, 8, 8), np.uint8), (50.0, 5.0, 5.0))
    assert blocker.read_text().startswith("a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder"]


def test_bundle_refuses_a_target_label_fraction_outside_0_1(tmp_path, synthetic_dir):
    with pytest.raises(AssertionError, match=r"target_label_fraction must lie in \[0, 1\]"):
        run_bundle(["train.json"], tmp_path, "--dataset_dir", str(synthetic_dir), "--target_label_fraction", "-0.1", *SMALL)
    assert not list(tmp_path.glob("models/*"))  # no checkpoint was written
