"""The nuclei_instances bundle: synthetic nuclei, instance post-processing choices, metric, bundle runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from custom.data import ensure_synthetic_nuclei, load_datalist, read_volume, synthesize_nuclei
from custom.inference.watershed import connected_component_instances
from custom.metrics import InstanceMetrics, instance_metrics
from custom.transforms import InstanceTargetsd, InstancesFromMapsd
from custom.utils import bundle_run_command

from .conftest import BUNDLES, REPO_ROOT, run_bundle, touching_disks

FAST = ("--max_epochs", "1", "--iterations_per_epoch", "2", "--val_interval", "1", "--patch_size", "[64,64]", "--batch_size", "2")
CONFIGS = BUNDLES / "nuclei_instances" / "configs"


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


def test_synthetic_nuclei_touch_so_connected_components_merge_them():
    image, labels = synthesize_nuclei(seed=4)
    assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    assert labels.max() >= 15
    assert connected_component_instances(labels > 0).max() < labels.max()
    assert image[labels > 0].mean() > image[labels == 0].mean() + 0.3


def test_watershed_separates_what_connected_components_merge():
    labels = touching_disks()
    maps = _logit(InstanceTargetsd("label")({"label": torch.as_tensor(labels[None])})["label"])
    scores = {m: instance_metrics(InstancesFromMapsd("pred", method=m)({"pred": maps})["pred"][0].numpy(), labels) for m in InstancesFromMapsd.METHODS}
    assert scores["watershed"]["ap70"] == 1.0 and scores["watershed"]["merges"] == 0
    assert scores["connected_components"]["merges"] == 1 and scores["connected_components"]["ap70"] == 0.0
    with pytest.raises(ValueError, match="unknown instance method 'blobs'"):
        InstancesFromMapsd("pred", method="blobs")


def test_instance_metric_pools_counts_over_images():
    labels = touching_disks()
    merged = (labels > 0).astype(np.int32)
    engine = Engine(lambda e, batch: ([torch.as_tensor(batch[0][None])], [torch.as_tensor(labels[None])]))
    InstanceMetrics().attach(engine, "instances")
    metrics = engine.run([(labels,), (merged,)], max_epochs=1).metrics
    assert metrics["ap70"] == pytest.approx(2 / (2 + 1 + 2))  # image 1: 2 TP; image 2: 1 FP, 2 FN
    assert metrics["merges"] == 1 and metrics["splits"] == 0
    with pytest.raises(ValueError, match="unknown value 'ap42'"):
        InstanceMetrics(only="ap42")


@pytest.fixture(scope="module")
def nuclei_dir(tmp_path_factory) -> Path:
    return Path(ensure_synthetic_nuclei(tmp_path_factory.mktemp("nuclei") / "synthetic", n_train=4, n_val=2, n_test=2, size=96))


def test_bundle_trains_and_writes_instances_and_metrics(tmp_path, nuclei_dir):
    run_bundle(["train.json"], tmp_path, "--dataset_dir", str(nuclei_dir), *FAST, bundle="nuclei_instances")
    assert (tmp_path / "models" / "model.pt").exists() and list((tmp_path / "runs").glob("events.out.tfevents.*"))
    run_bundle(["inference.json"], tmp_path, "--dataset_dir", str(nuclei_dir), "--roi_size", "[64,64]", bundle="nuclei_instances")
    for entry in load_datalist(nuclei_dir, "test"):
        stem = Path(entry["image"]).name.split(".")[0]
        instances, _ = read_volume(tmp_path / "prediction" / f"{stem}_instances.tif")
        assert instances.shape == read_volume(entry["image"])[0].shape and instances.dtype == np.uint16
    for method in InstancesFromMapsd.METHODS:
        overrides = ("--dataset_dir", str(nuclei_dir), "--roi_size", "[64,64]", "--instance_method", method, "--eval_dir", str(tmp_path / method))
        run_bundle(["inference.json", "evaluate.json"], tmp_path, *overrides, bundle="nuclei_instances")
        result = json.loads((tmp_path / method / "metrics.json").read_text())
        assert result["instance_method"] == method
        assert {"ap", "ap50", "ap70", "precision70", "recall70", "f1_70", "splits", "merges"} <= set(result["metrics"])


def test_multi_gpu_config_trains_on_two_cpu_ranks(tmp_path, nuclei_dir):
    cmd = bundle_run_command([CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json"], tmp_path, "--dataset_dir", str(nuclei_dir), *FAST)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *cmd[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(torchrun, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert log.count("Train completed") == 2
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.pt", "model_final.pt", "train_checkpoint_epoch=1.pt"]


@pytest.mark.realdata
def test_real_mitochondria_instances_prepare_and_train(shared_data, tmp_path):
    out = tmp_path / "mito_instances"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "prepare_data.py"), "mito_instances", str(shared_data), str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    for name, n_test in (("vnc", 4), ("fafb", 2)):
        test = load_datalist(out / name, "test")
        assert len(test) == n_test
        labels, _ = read_volume(test[0]["label"])
        assert labels.max() >= 3  # several mitochondria per section
    run_bundle(["train.json"], tmp_path / "b", "--dataset_dir", str(out / "fafb"), *FAST, bundle="nuclei_instances")
    run_bundle(["inference.json", "evaluate.json"], tmp_path / "b", "--dataset_dir", str(out / "fafb"), "--roi_size", "[64,64]", bundle="nuclei_instances")
    assert json.loads((tmp_path / "b" / "eval" / "metrics.json").read_text())["metrics"]["ap"] >= 0.0
