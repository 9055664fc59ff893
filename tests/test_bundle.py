"""The em_mitochondria bundle run through ``python -m monai.bundle`` on the synthetic pair."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from custom.data import load_datalist, read_volume
from custom.engines import read_network_record
from custom.engines.utils import read_model_state
from custom.networks import UNet

from .conftest import BUNDLES, run_bundle

FAST = ("--max_epochs", "1", "--iterations_per_epoch", "2", "--val_interval", "1", "--patch_size", "[64,64]", "--batch_size", "2")


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory, synthetic_dir) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    run_bundle(["train.json"], root, "--dataset_dir", str(synthetic_dir), *FAST)
    return root


def test_training_writes_loadable_checkpoints(trained_root):
    for name in ("model.pt", "model_final.pt"):
        UNet().load_state_dict(read_model_state(trained_root / "models" / name))
        record = read_network_record(trained_root / "models" / name)  # what inference builds from it by default
        assert record == {"network_def": UNet().definition(), "pixel_size_nm": 5.0, "roi_size": [64, 64], "normalisation": "z-score per volume"}
    resume = list((trained_root / "models").glob("train_checkpoint_*.pt"))
    assert len(resume) == 1
    assert {"model", "optimizer", "trainer"} <= set(torch.load(resume[0], weights_only=True))
    assert list((trained_root / "runs").glob("events.out.tfevents.*"))


def test_training_keeps_the_checkpoint_of_three_quarters_of_its_epochs(tmp_path, synthetic_dir):
    """``checkpoint_agreement`` compares a model with the checkpoint its training kept at 3/4 of its epochs:
    one such file, where ``snapshot_checkpoint`` finds it, loadable as a model and not the final one;
    a one-epoch training (``trained_root``) keeps none."""
    from custom.handlers import snapshot_checkpoint, snapshot_epoch

    run_bundle(["train.json"], tmp_path, "--dataset_dir", str(synthetic_dir), "--max_epochs", "4", "--iterations_per_epoch", "2", "--val_interval", "4", *FAST[-4:])
    models = tmp_path / "models"
    assert sorted(p.name for p in models.glob("snapshot*")) == ["snapshot_checkpoint_epoch=3.pt"]
    snapshot = snapshot_checkpoint(models, 4)
    assert snapshot == models / "snapshot_checkpoint_epoch=3.pt" and read_network_record(snapshot)["pixel_size_nm"] == 5.0
    assert snapshot_checkpoint(models, 6) is None and snapshot_checkpoint(models, 2) is None  # another length's epoch; none kept
    assert [snapshot_epoch(n) for n in (1, 2, 3, 4, 20, 100)] == [0, 0, 2, 3, 15, 75]  # one save each: twice the interval is past the end
    earlier, final = read_model_state(snapshot), read_model_state(models / "model_final.pt")
    assert any(not torch.equal(earlier[k], final[k]) for k in final)


def test_a_one_epoch_training_keeps_no_snapshot(trained_root):
    assert not list((trained_root / "models").glob("snapshot*"))


def test_inference_keeps_shape_and_spacing(trained_root, synthetic_dir):
    result = run_bundle(["inference.json"], trained_root, "--dataset_dir", str(synthetic_dir), "--roi_size", "[64,64]")
    source_image = load_datalist(synthetic_dir, "target_volumes")[0]["image"]
    console = result.stdout + result.stderr
    assert "100%|" in console  # a progress bar over each volume's window batches
    assert f"wrote {trained_root / 'prediction'}" in console and "_mask.tif" in console  # where the outputs went
    image, spacing = read_volume(source_image)
    stem = Path(source_image).name.split(".")[0]
    for fmt in ("tif", "nii.gz"):
        prob, prob_spacing = read_volume(trained_root / "prediction" / f"{stem}_prob.{fmt}")
        mask, _ = read_volume(trained_root / "prediction" / f"{stem}_mask.{fmt}")
        assert prob.shape == mask.shape == image.shape
        assert prob.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        np.testing.assert_allclose(prob_spacing, spacing, rtol=1e-4)
        np.testing.assert_array_equal(mask, (prob > 127).astype(np.uint8))


def test_evaluation_writes_metrics_and_overlay(trained_root, synthetic_dir, tmp_path):
    result = run_bundle(
        ["inference.json", "evaluate.json"], trained_root, "--dataset_dir", str(synthetic_dir), "--roi_size", "[64,64]",
        "--save_predictions", "true", "--output_dir", str(tmp_path / "masks"),
    )  # fmt: skip
    test_image = Path(load_datalist(synthetic_dir, "target_test")[0]["image"])
    mask, _ = read_volume(tmp_path / "masks" / f"{test_image.name.split('.')[0]}_mask.tif")  # the evaluated volume's mask, same run
    assert mask.shape == read_volume(test_image)[0].shape
    metrics = json.loads((trained_root / "eval" / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"iou", "dice", "miou", "mdice", "precision", "recall"}
    assert 0.0 <= metrics["miou"] <= 1.0 and 0.0 <= metrics["mdice"] <= 1.0
    assert 0.0 <= metrics["iou"] <= metrics["dice"] <= 1.0
    assert "iou" in result.stdout + result.stderr
    assert f"wrote {trained_root / 'eval' / 'metrics.json'}" in result.stdout + result.stderr
    assert list((trained_root / "eval").glob("*_overlay.png"))


def test_logged_bundle_runs_show_their_log_and_progress_on_the_console(trained_root, synthetic_dir, tmp_path, capsys):
    """#33 item 3: ``scripts/demo.py``'s steps print where their log is and the newest progress line."""
    from custom.utils.bundle import latest_status, run_bundle_logged

    log = tmp_path / "logs" / "inference.log"
    configs = [BUNDLES / "em_mitochondria" / "configs" / "inference.json"]
    run_bundle_logged(configs, trained_root, log, progress_every_s=0.5, dataset_dir=str(synthetic_dir), roi_size=[64, 64], output_dir=str(tmp_path / "pred"))
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"  log: {log}" and printed[-1] == f"  {latest_status(log)}", printed
    assert "100%|" in log.read_text()  # the window-batch bar went to the log, where the heartbeat reads it
    (tmp_path / "bars.log").write_text("INFO - start\r 10%|#    | 1/10 [00:01<00:09]\r 20%|##   | 2/10 [00:02<00:08]\rINFO - done\n")
    assert latest_status(tmp_path / "bars.log") == "20%|##   | 2/10 [00:02<00:08]"
    assert latest_status(tmp_path / "missing.log") is None


@pytest.mark.parametrize(
    ("configs", "log_line"),
    [(["da/adabn.json"], "AdaBN: batch-norm statistics re-estimated"), (["da/adabn.json", "da/tent.json"], "TENT: 3 steps")],
)
def test_test_time_adaptation_runs_before_evaluation(trained_root, synthetic_dir, configs, log_line):
    eval_dir = trained_root / ("eval_" + Path(configs[-1]).stem)
    result = run_bundle(
        ["inference.json", "evaluate.json", *configs], trained_root, "--dataset_dir", str(synthetic_dir),
        "--roi_size", "[64,64]", "--target_patches", "8", *(["--tent_steps", "3"] if "da/tent.json" in configs else []), "--eval_dir", str(eval_dir),
    )  # fmt: skip
    assert log_line in result.stdout + result.stderr
    assert 0.0 <= json.loads((eval_dir / "metrics.json").read_text())["metrics"]["iou"] <= 1.0


@pytest.mark.parametrize("configs", [[], ["da/adabn.json"]])
def test_scale_match_config_evaluates_at_the_chosen_target_pixel_size(trained_root, synthetic_dir, configs):
    eval_dir = trained_root / f"eval_scale_match{len(configs)}"
    run_bundle(
        ["inference.json", "evaluate.json", *configs, "da/scale_match.json"], trained_root, "--dataset_dir", str(synthetic_dir),
        "--roi_size", "[64,64]", *(["--target_patches", "8"] if configs else []), "--eval_dir", str(eval_dir), "--scale_match_factors", "[1.0, 2.0]",
        "--scale_match_file", str(eval_dir / "scale_match.json"),
    )  # fmt: skip
    match = json.loads((eval_dir / "scale_match.json").read_text())
    tried = [c["factor"] for c in match["candidates"]]  # the training size, then the side it points to
    assert tried[0] == 1.0 and set(tried) <= {1.0, 2.0} and match["factor"] in tried
    assert 0.0 <= json.loads((eval_dir / "metrics.json").read_text())["metrics"]["iou"] <= 1.0


def test_tta_config_puts_test_time_augmentation_into_the_bundle_inferer():
    from monai.bundle import ConfigParser

    from custom.inference import AugmentedWindowInferer

    configs = BUNDLES / "em_mitochondria" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.json"), str(configs / "evaluate.json"), str(configs / "tta.json")])
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, AugmentedWindowInferer) and inferer.flip_axes == (-2, -1) and inferer.rot90
    parser.read_config([str(configs / "inference.json"), str(configs / "evaluate.json")])
    assert not isinstance(parser.get_parsed_content("inferer"), AugmentedWindowInferer)


def test_scale_config_widens_the_source_zoom_augmentation():
    from monai.bundle import ConfigParser
    from monai.transforms import RandZoomd

    configs = BUNDLES / "em_mitochondria" / "configs"

    def zoom(*overrides: str) -> RandZoomd:
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), *(str(configs / o) for o in overrides)])
        return next(t for t in parser.get_parsed_content("train#augmentation").transforms if isinstance(t, RandZoomd))

    plain, randomized, scaled = zoom(), zoom("da/randomize.json"), zoom("da/scale.json")
    assert plain.prob == 0.0 and randomized.prob == 0.5  # domain randomisation keeps its mild zoom
    assert (randomized.rand_zoom.min_zoom, randomized.rand_zoom.max_zoom) == ((0.8,), (1.25,))
    assert scaled.prob == 0.5 and (scaled.rand_zoom.min_zoom, scaled.rand_zoom.max_zoom) == ((0.5,), (2.0,))


@pytest.mark.parametrize(
    ("configs", "options", "log_term"),
    [
        (["da/class_mmd.json"], ["--class_mmd_confidence", "0.5"], "class_mmd_l3"),
        (["da/self_training.json", "da/consistency.json"], ["--pseudo_label_confidence", "0.5"], "self_training"),
    ],
    ids=["class_mmd", "consistency"],
)
def test_pretrained_adaptation_fine_tunes_the_source_model(trained_root, synthetic_dir, tmp_path, configs, options, log_term):
    pretrained = trained_root / "models" / "model_final.pt"
    result = run_bundle(
        ["train.json", *configs], tmp_path, "--dataset_dir", str(synthetic_dir),
        "--pretrained_checkpoint", str(pretrained), *options, *FAST,
    )  # fmt: skip
    assert log_term in result.stdout + result.stderr  # the objective's term reached the StatsHandler
    assert "target_foreground" in result.stdout + result.stderr  # the label-free collapse monitor is logged
    before, after = read_model_state(pretrained), read_model_state(tmp_path / "models" / "model_final.pt")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    checkpoint = torch.load(next((tmp_path / "models").glob("train_checkpoint_*.pt")), weights_only=True)
    assert "adaptation" in checkpoint  # a resumed run gets the objective's state back (teacher, classifiers)
    if "self_training" in log_term:
        assert checkpoint["adaptation"]["_extra_state"].keys() == after.keys()  # the EMA teacher's weights


@pytest.mark.parametrize("bundle", ["em_mitochondria", "em_membranes", "nuclei_instances"])
def test_network_matches_metadata(bundle):
    configs = BUNDLES / bundle / "configs"
    cmd = [
        sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
        "--meta_file", str(configs / "metadata.json"), "--config_file", str(configs / "inference.json"),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_missing_dataset_gives_one_clear_error(tmp_path):
    with pytest.raises(AssertionError, match="no datalist"):
        run_bundle(["train.json"], tmp_path, "--dataset_dir", str(tmp_path / "nowhere"), *FAST)
