"""End to end through the bundle: adaptation methods beat source-only on the synthetic shift."""

from __future__ import annotations

import json

import pytest

from .conftest import run_bundle

BUDGET = ("--max_epochs", "4", "--iterations_per_epoch", "10", "--val_interval", "4", "--patch_size", "[64,64]", "--seed", "0")


def _target_iou(root, synthetic_dir, *configs: str) -> float:
    run_bundle(["train.json", *configs], root, "--dataset_dir", str(synthetic_dir), *BUDGET)
    run_bundle(["inference.json", "evaluate.json"], root, "--dataset_dir", str(synthetic_dir), "--roi_size", "[64,64]")
    return json.loads((root / "eval" / "metrics.json").read_text())["metrics"]["iou"]


@pytest.fixture(scope="module")
def source_only_iou(tmp_path_factory, synthetic_dir) -> float:
    return _target_iou(tmp_path_factory.mktemp("source_only"), synthetic_dir)


@pytest.mark.parametrize("method", ["coral", "randomize"])
def test_method_beats_source_only_on_the_synthetic_domain_shift(method, source_only_iou, tmp_path, synthetic_dir):
    adapted = _target_iou(tmp_path / method, synthetic_dir, f"da/{method}.json")
    print(f"target IoU: source-only {source_only_iou:.3f}, {method} {adapted:.3f}")
    assert adapted > source_only_iou + 0.1
