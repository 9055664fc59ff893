"""Resume is exact and never makes things worse; failed runs leave no file that looks valid (issue 30, items 3, 4, 12)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import torch

from custom.data import write_volume
from custom.engines.utils import read_model_state
from custom.utils import bundle_run_command

from .conftest import CONFIGS, kill_after_first_epoch, run_bundle

SMALL = ("--patch_size", "[64,64]", "--batch_size", "2")


def test_killed_randomised_adaptation_resumes_to_the_uninterrupted_weights(tmp_path, synthetic_dir):
    """Real randomised loaders (random patches, flips, noise, target patches) and an MMD objective:
    killed after epoch 1 and resumed, the final and best weights equal an uninterrupted run's bit for bit."""
    configs = [CONFIGS / "train.json", CONFIGS / "da" / "mmd.json"]
    budget = ("--dataset_dir", str(synthetic_dir), "--max_epochs", "4", "--iterations_per_epoch", "12", "--val_interval", "1", "--seed", "5", *SMALL)
    run_bundle(configs, tmp_path / "whole", *budget)
    (tmp_path / "killed").mkdir()
    kill_after_first_epoch(configs, tmp_path / "killed", *budget)
    run_bundle(configs, tmp_path / "killed", *budget, "--resume", "true")
    for name in ("model_final.pt", "model.pt"):
        whole, resumed = (read_model_state(tmp_path / run / "models" / name) for run in ("whole", "killed"))
        assert whole.keys() == resumed.keys()
        for key, value in whole.items():
            torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=f"{name}: {key} differs after the resume")


def test_a_resume_cannot_replace_a_better_best_model(tmp_path, synthetic_dir):
    """The best metric and its epoch travel in the training checkpoint: a resumed run's first
    validation is compared with them, not taken as a new best."""
    budget = ("--dataset_dir", str(synthetic_dir), "--iterations_per_epoch", "2", "--val_interval", "1", *SMALL)
    run_bundle(["train.json"], tmp_path, *budget, "--max_epochs", "1")
    models = tmp_path / "models"
    checkpoint_path = models / "train_checkpoint_epoch=1.pt"
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    best = checkpoint["best_model"]
    assert best["best_metric_epoch"] == 1 and len(best["saved"]) == 1 and best["saved"][0][0] == best["best_metric"]
    # an earlier validation had found a model better than any this short run can reach
    checkpoint["best_model"] = {"saved": [[0.9999, best["saved"][0][1]]], "best_metric": 0.9999, "best_metric_epoch": 1}
    torch.save(checkpoint, checkpoint_path)
    better = (models / "model.pt").read_bytes()
    result = run_bundle(["train.json"], tmp_path, *budget, "--max_epochs", "3", "--resume", "true")
    assert (models / "model.pt").read_bytes() == better, "a resumed run replaced a better model.pt"
    assert "best value: 0.9999 at epoch: 1" in result.stdout + result.stderr
    final = torch.load(models / "train_checkpoint_epoch=3.pt", weights_only=True)["best_model"]
    assert final["best_metric"] == 0.9999 and final["best_metric_epoch"] == 1


def test_a_failed_training_leaves_no_final_model(tmp_path, synthetic_dir):
    """MONAI's saver writes ``model_final.pt`` when training raises; ours does not (a constant target
    volume fails at the first validation's target-entropy patches, after an epoch of training)."""
    bad = tmp_path / "data"
    shutil.copytree(synthetic_dir, bad)
    target = next((bad / "volumes").rglob("*target_train.tif"))
    write_volume(target, np.full((3, 200, 200), 7, np.uint8), (50.0, 5.0, 5.0), overwrite=True)
    cmd = bundle_run_command([CONFIGS / "train.json"], tmp_path / "run", "--dataset_dir", str(bad), "--max_epochs", "2", "--iterations_per_epoch", "2", "--val_interval", "1", *SMALL)
    (tmp_path / "run").mkdir()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "constant" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "models" / "model_final.pt").exists()
