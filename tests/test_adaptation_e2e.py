"""End to end through the bundle: an adaptation method beats source-only on the synthetic shift."""

from __future__ import annotations

import json

from .conftest import run_bundle

BUDGET = ("--max_epochs", "4", "--iterations_per_epoch", "10", "--val_interval", "4", "--patch_size", "[64,64]", "--seed", "0")


def _target_iou(root, synthetic_dir, *configs: str) -> float:
    run_bundle(["train.json", *configs], root, "--dataset_dir", str(synthetic_dir), *BUDGET)
    run_bundle(["inference.json", "evaluate.json"], root, "--dataset_dir", str(synthetic_dir), "--roi_size", "[64,64]")
    return json.loads((root / "eval" / "metrics.json").read_text())["metrics"]["iou"]


def test_coral_beats_source_only_on_the_synthetic_domain_shift(tmp_path, synthetic_dir):
    source_only = _target_iou(tmp_path / "source_only", synthetic_dir)
    coral = _target_iou(tmp_path / "coral", synthetic_dir, "da/coral.json")
    print(f"target IoU: source-only {source_only:.3f}, CORAL {coral:.3f}")
    assert coral > source_only + 0.1
