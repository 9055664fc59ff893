"""Never lose a user's data; one clear error before any work (issue 30: items 1, 2, 5, 6, 7, 8, 9, 10, 11, 13-17)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch

from custom.data import EMDataError, load_datalist, write_volume
from custom.data.lazy import open_volume
from custom.engines.utils import CheckpointError, load_pretrained
from custom.inference import VolumePredictor, check_prediction_outputs, input_datalist, segment_volume
from custom.networks import UNet, check_window_size
from custom.utils import BundleOverrideError, OutputOverlapsInputError, atomic_path, check_distinct_from_inputs
from custom.utils.overrides import check_overrides

from .conftest import REPO_ROOT, run_bundle
from .test_blockwise import _Crash, _CrashAfter

SCRIPTS = REPO_ROOT / "scripts"


def _cli(script: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, env=env, timeout=600, cwd=cwd)


def _tree(folder) -> dict:
    """Every file under ``folder`` with its bytes: what 'no file touched' compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _volume(shape=(2, 64, 64), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(120, 30, shape).clip(0, 255).astype(np.uint8)


# -- 1. output = input, output inside input, input inside output -------------------------------
@pytest.mark.parametrize("source, output", [("in.zarr", "in.zarr"), ("in.zarr", "in.zarr/out.zarr"), ("out.zarr/in.tif", "out.zarr")])
def test_segment_refuses_an_output_that_is_holds_or_lies_in_the_input(tmp_path, checkpoint, source, output):
    write_volume(tmp_path / source, _volume(), (50.0, 5.0, 5.0))
    before = _tree(tmp_path)
    result = _cli("segment.py", "run", str(tmp_path / source), str(tmp_path / output), "--checkpoint", checkpoint, "--roi-size", "64,64", "--overwrite")
    assert result.returncode == 2 and "would destroy the input" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert _tree(tmp_path) == before


def test_prepare_data_refuses_out_dir_equal_to_or_inside_data_dir(tmp_path):
    data = tmp_path / "data"
    (data / "drosophila_vnc").mkdir(parents=True)
    (data / "drosophila_vnc" / "keep.txt").write_text("user data")
    for out in (data, data / "prepared"):
        result = _cli("prepare_data.py", "from_dir", str(data), str(out), "--force")
        assert result.returncode == 1 and "would destroy the input" in result.stderr
    assert _tree(data) == {"drosophila_vnc/keep.txt": b"user data"}


def test_export_refuses_the_checkpoint_as_output_and_an_existing_export(tmp_path, checkpoint):
    model = tmp_path / "model.pt"
    shutil.copy(checkpoint, model)
    before = model.read_bytes()
    result = _cli("export_model.py", "torchscript", str(model), str(model), "--overwrite")
    assert result.returncode != 0 and "would destroy the input" in result.stderr and model.read_bytes() == before
    (tmp_path / "m.ts").write_text("an older export")
    result = _cli("export_model.py", "torchscript", str(model), str(tmp_path / "m.ts"))
    assert result.returncode != 0 and "already exists" in result.stderr
    assert (tmp_path / "m.ts").read_text() == "an older export"


def test_overlap_rule_resolves_links_and_dots(tmp_path):
    (tmp_path / "in.zarr").mkdir()
    os.symlink(tmp_path / "in.zarr", tmp_path / "link.zarr")
    for output in (tmp_path / "link.zarr", tmp_path / "x" / ".." / "in.zarr", tmp_path):
        with pytest.raises(OutputOverlapsInputError):
            check_distinct_from_inputs(output, [tmp_path / "in.zarr"])
    check_distinct_from_inputs(tmp_path / "in2.zarr", [tmp_path / "in.zarr"])  # a sibling is fine


# -- 2. bundle inference with two inputs of the same name --------------------------------------
def test_inputs_of_the_same_name_are_refused_before_inference(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "vol.tif", _volume())
    with pytest.raises(EMDataError, match="must be a list of paths"):  # a string would be read letter by letter
        input_datalist(str(tmp_path / "a" / "vol.tif"))
    datalist = input_datalist([str(tmp_path / "a" / "vol.tif"), str(tmp_path / "b" / "vol.tif")])
    with pytest.raises(EMDataError, match="share the name 'vol'"):
        check_prediction_outputs(datalist, tmp_path / "prediction", ["tif"])
    with pytest.raises(OutputOverlapsInputError):  # an input named like another input's output
        check_prediction_outputs([{"image": str(tmp_path / "a" / "vol.tif")}, {"image": str(tmp_path / "a" / "vol_mask.tif")}], tmp_path / "a", ["tif"])


def test_bundle_inference_refuses_same_named_inputs_and_a_string_input_files(tmp_path, synthetic_dir):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_volume(tmp_path / folder / "vol.tif", _volume((2, 64, 64)), (50.0, 5.0, 5.0))
    files = f"['{tmp_path / 'a' / 'vol.tif'}','{tmp_path / 'b' / 'vol.tif'}']"
    with pytest.raises(AssertionError, match="share the name 'vol'"):
        run_bundle(["inference.json"], tmp_path / "run", "--input_files", files)
    with pytest.raises(AssertionError, match="--input_files expects a list"):
        run_bundle(["inference.json"], tmp_path / "run", "--input_files", str(tmp_path / "a" / "vol.tif"))
    assert not (tmp_path / "run" / "prediction").exists()
    assert not (tmp_path / "run" / "data").exists()  # 17: no synthetic dataset written as a side effect


# -- 5. blockwise resume of an input that changed ----------------------------------------------
def test_blockwise_resume_refuses_an_input_changed_since_the_kill(tmp_path):
    tifffile.imwrite(tmp_path / "in.tif", _volume((4, 64, 64), seed=2))
    predictor = VolumePredictor(UNet(2, channels=(4, 8)).eval(), 2, (32, 32))
    kwargs = {"block_shape": (1, 32, 32), "progress": False, "num_workers": 0, "spacing": (50.0, 5.0, 5.0)}
    with pytest.raises(_Crash):
        segment_volume(open_volume(tmp_path / "in.tif"), _CrashAfter(predictor, 3), tmp_path / "out.zarr", **kwargs)
    time.sleep(0.01)
    tifffile.imwrite(tmp_path / "in.tif", _volume((4, 64, 64), seed=3))  # same path, shape and dtype
    with pytest.raises(EMDataError, match="input_content changed"):
        segment_volume(open_volume(tmp_path / "in.tif"), predictor, tmp_path / "out.zarr", **kwargs)
    fresh = segment_volume(open_volume(tmp_path / "in.tif"), predictor, tmp_path / "out.zarr", overwrite=True, **kwargs)
    assert fresh["skipped"] == 0  # --overwrite restarts with the new input's statistics


# -- 6. leftovers of a killed atomic write -----------------------------------------------------
def test_a_later_write_removes_the_temporary_folder_a_killed_write_left(tmp_path):
    leftover = tmp_path / ".out_mask.tif.abc123.tmp"
    leftover.mkdir()
    (leftover / "out_mask.tif").write_bytes(b"half a TIFF")
    os.utime(leftover, (time.time() - 60, time.time() - 60))
    write_volume(tmp_path / "out_mask.tif", np.zeros((1, 8, 8), np.uint8), (50.0, 5.0, 5.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_mask.tif"]
    with atomic_path(tmp_path / "other.txt") as tmp:
        tmp.write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "out_mask.tif"]


# -- 7. typo'd or mistyped overrides -----------------------------------------------------------
def test_overrides_that_name_no_key_or_have_the_wrong_type_are_refused():
    config = {
        "max_epochs": 10, "patch_size": [256, 256], "resume": False, "network_def": {"channels": [16, 32]}, "adaptation": None, "lr": 0.001,
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001},
    }  # fmt: skip
    check_overrides(config, {"max_epochs": "3", "patch_size": "[64,64]", "resume": "true", "network_def#channels": "[8,16]", "adaptation": "@x", "lr": "1e-4", "config_file": "a.json"})
    check_overrides(config, {"optimizer#weight_decay": "1e-4"})  # a new argument of a component: its constructor checks the name
    with pytest.raises(BundleOverrideError, match="did you mean --max_epochs"):
        check_overrides(config, {"max_epoch": "1"})
    for overrides, match in [
        ({"max_epochs": "abc"}, "expects an integer"),
        ({"max_epochs": "1.5"}, "expects an integer"),
        ({"patch_size": "64"}, "expects a list"),
    ]:
        with pytest.raises(BundleOverrideError, match=match):
            check_overrides(config, overrides)
    with pytest.raises(BundleOverrideError, match="did you mean --network_def#channels"):
        check_overrides(config, {"network_def#chanels": "[4]"})


@pytest.mark.parametrize("args, message", [
    (["--max_epochs", "abc"], "--max_epochs expects an integer (default 10), got 'abc'."),
    (["--max_epoch", "1"], "--max_epoch is not a key of the configs this run merges; did you mean --max_epochs?"),
    (["--patch_size", "[60,60]"], "--patch_size [60, 60] is not divisible by the network's downsampling [8, 8] per axis; use e.g. [56, 56] or [64, 64]."),
])
def test_bundle_run_ends_with_one_clear_line_for_a_bad_override(tmp_path, synthetic_dir, args, message):
    with pytest.raises(AssertionError) as failed:
        run_bundle(["train.json"], tmp_path, "--dataset_dir", str(synthetic_dir), *args)
    assert failed.value.args[0].rstrip().endswith(message)
    assert not (tmp_path / "models").exists()


# -- 8 and 16. empty datalist lists ------------------------------------------------------------
def test_empty_lists_say_what_the_run_needed_them_for(tmp_path, synthetic_dir):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    datalist = json.loads((data / "datalist.json").read_text())
    datalist["target_test"], datalist["training"] = [], []
    (data / "datalist.json").write_text(json.dumps(datalist))
    with pytest.raises(EMDataError, match="nothing to evaluate"):
        load_datalist(data, "target_test", required=True)
    with pytest.raises(AssertionError, match="the 'target_test' list is empty; there is nothing to evaluate"):
        run_bundle(["inference.json", "evaluate.json"], tmp_path / "run", "--dataset_dir", str(data), "--checkpoint", "unused.pt")
    assert not (tmp_path / "run" / "eval").exists()
    with pytest.raises(AssertionError, match="the 'training' list is empty; training needs at least one labelled source volume"):
        run_bundle(["train.json"], tmp_path / "run", "--dataset_dir", str(data))


# -- 9, 10, 13, 16. segment.py: every option checked before any work ---------------------------
@pytest.mark.parametrize("extra, message", [
    (["--block-shape", "0,0,0"], "block_shape must be three positive integers"),
    (["--block-shape", "0"], "block_shape must be three positive integers"),
    (["--block-shape", "4,-1,64"], "block_shape must be three positive integers"),
    (["--prob-dtype", "float32"], "prob_dtype must be one of ('uint8', 'float16')"),
])
def test_segment_validates_options_before_any_block(tmp_path, checkpoint, extra, message):
    tifffile.imwrite(tmp_path / "in.tif", _volume())
    result = _cli("segment.py", "run", str(tmp_path / "in.tif"), str(tmp_path / "out.zarr"), "--checkpoint", checkpoint, "--roi-size", "64,64", *extra)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.zarr").exists()


def test_segment_refuses_a_bad_suffix_a_constant_volume_and_a_truncated_tiff(tmp_path, checkpoint):
    tifffile.imwrite(tmp_path / "in.tif", _volume())
    tifffile.imwrite(tmp_path / "const.tif", np.full((2, 64, 64), 7, np.uint8))
    whole = (tmp_path / "in.tif").read_bytes()
    (tmp_path / "trunc.tif").write_bytes(whole[: len(whole) // 2])
    for source, output, message in [
        ("in.tif", "out.h5", "cannot write '.h5'; use .tif, .nii.gz or .zarr"),
        ("const.tif", "out.zarr", "const.tif: image is constant (7); expected EM intensities"),
        ("trunc.tif", "out.zarr", "trunc.tif: cannot read the voxels"),
    ]:
        result = _cli("segment.py", "run", str(tmp_path / source), str(tmp_path / output), "--checkpoint", checkpoint, "--roi-size", "64,64")
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / output).exists()


# -- 16. checkpoints that are not ours, or of another network ----------------------------------
def test_bad_checkpoints_get_one_clear_error(tmp_path):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(CheckpointError, match="cannot be read as a PyTorch checkpoint") as err:
        load_pretrained(UNet(2), tmp_path / "random.pt")
    assert "weights_only=False" not in str(err.value)
    torch.save(UNet(3).state_dict(), tmp_path / "3d.pt")
    with pytest.raises(CheckpointError, match=r"holds a network \(3D, .*\) that is not the one the config builds \(2D"):
        load_pretrained(UNet(2), tmp_path / "3d.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_pretrained(UNet(2), tmp_path / "missing.pt")


def test_bundle_inference_with_a_bad_checkpoint_ends_with_its_reason(tmp_path):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AssertionError) as failed:
        run_bundle(["inference.json"], tmp_path / "run", "--checkpoint", str(tmp_path / "random.pt"))
    assert failed.value.args[0].rstrip().splitlines()[-1].startswith("error: ")
    assert "random.pt: cannot be read as a PyTorch checkpoint" in failed.value.args[0]
    assert "weights_only=False" not in failed.value.args[0]


@pytest.mark.parametrize("case", ["consistency_alone", "no_spacing", "missing_checkpoint"])
def test_bundle_runs_end_with_the_cause_as_their_last_line(tmp_path, checkpoint, case):
    """#33 item 5: not "Failed to evaluate ConfigExpression" hundreds of lines below the cause."""
    tifffile.imwrite(tmp_path / "plain.tif", _volume((2, 64, 64)))  # no spacing metadata
    configs, args, message = {
        "consistency_alone": (
            ["train.json", "da/consistency.json"], ["--dataset_dir", str(tmp_path)],
            "error: da/consistency.json builds on da/self_training.json: merge it before, e.g. --config_file "
            "\"['train.json','da/self_training.json','da/consistency.json']\" (full paths).",
        ),
        "no_spacing": (
            ["inference.json"], ["--input_files", f"['{tmp_path / 'plain.tif'}']", "--checkpoint", checkpoint, "--roi_size", "[64,64]"],
            "spacing unknown, cannot resample to 5.0 nm; pass the image's spacing in nm (bundle runs: --input_spacing_nm",
        ),
        "missing_checkpoint": (["inference.json"], ["--input_files", f"['{tmp_path / 'plain.tif'}']", "--checkpoint", str(tmp_path / "nope.pt")], "checkpoint not found"),
    }[case]
    with pytest.raises(AssertionError) as failed:
        run_bundle(configs, tmp_path / "run", *args)
    last = failed.value.args[0].rstrip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert not (tmp_path / "run" / "prediction").exists() and not (tmp_path / "run" / "models").exists()


def test_window_sizes_the_network_cannot_downsample_name_the_nearest_valid_ones():
    check_window_size(UNet(2), [64, 96])
    with pytest.raises(ValueError, match=r"patch_size \[100, 64\] is not divisible .* use e.g. \[96, 64\] or \[104, 64\]"):
        check_window_size(UNet(2), [100, 64])
    anisotropic = UNet(3, channels=(4, 8, 16), strides=((1, 2, 2), (2, 2, 2)))
    check_window_size(anisotropic, [2, 64, 64])
    with pytest.raises(ValueError, match=r"\[3, 64, 64\]"):
        check_window_size(anisotropic, [3, 64, 64])


def test_export_refuses_an_input_shape_the_network_cannot_take_and_keeps_no_failed_export(tmp_path, checkpoint):
    result = _cli("export_model.py", "onnx", checkpoint, str(tmp_path / "m.onnx"), "--input-shape", "1,1,100,100")
    assert result.returncode != 0 and "use e.g. [96, 96] or [104, 104]" in result.stderr
    result = _cli("export_model.py", "torchscript", checkpoint, str(tmp_path / "m.ts"), "--atol", "-1")  # verification fails
    assert result.returncode != 0 and "differs from the checkpoint" in result.stderr
    result = _cli("export_model.py", "torchscript", checkpoint, str(tmp_path / "missing" / "m.ts"))
    assert result.returncode != 0 and "does not exist" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- 11. bundle runs show the project reader's message -----------------------------------------
def test_bundle_runs_show_the_readers_message_not_a_fallback_readers(tmp_path, checkpoint):
    write_volume(tmp_path / "vol.tif", _volume((2, 256, 256)), (50.0, 5.0, 5.0))
    whole = (tmp_path / "vol.tif").read_bytes()
    (tmp_path / "vol.tif").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(AssertionError) as failed:
        run_bundle(["inference.json"], tmp_path / "run", "--input_files", f"['{tmp_path / 'vol.tif'}']", "--checkpoint", checkpoint)
    assert "vol.tif: cannot be read as TIFF" in failed.value.args[0].rstrip().splitlines()[-1]
    assert "expected one grey channel" not in failed.value.args[0]


# -- 15. prepare_data: a corrupt local file is named, and no partial folder stays --------------
@pytest.mark.realdata
def test_prepare_data_names_a_corrupt_file_and_leaves_no_partial_folder(tmp_path, shared_data):
    data = tmp_path / "data"
    shutil.copytree(shared_data / "drosophila_vnc", data / "drosophila_vnc")
    shutil.copytree(shared_data / "fafb_mito", data / "fafb_mito")
    corrupt = sorted((data / "fafb_mito").rglob("*.*"))[-1]  # FAFB is read after VNC's volumes are written
    corrupt.write_bytes(b"not the file")
    result = _cli("prepare_data.py", "from_dir", str(data), str(tmp_path / "prepared"))
    assert result.returncode == 1 and f"{corrupt}: corrupt or not the expected file" in result.stderr, result.stderr
    assert "check the network" not in result.stderr
    assert not (tmp_path / "prepared").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary folder either


def test_prepare_data_refuses_an_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("a file")
    result = _cli("prepare_data.py", "from_dir", str(tmp_path), str(tmp_path.parent / "x" / ".." / tmp_path.name / "out"))
    assert result.returncode == 1
    result = _cli("prepare_data.py", "nuclei", str(tmp_path / "nodata"), str(tmp_path / "out"))
    assert result.returncode == 1 and "is a file, not a folder" in result.stderr
    assert (tmp_path / "out").read_text() == "a file"


# -- #31 item 3: preparing a pair of the user's own volumes -------------------------------------
def test_prepare_pair_of_own_volumes_writes_no_target_labels_and_names_missing_spacings(tmp_path):
    rng = np.random.default_rng(0)
    write_volume(tmp_path / "src.tif", _volume((3, 64, 96)), (50.0, 4.6, 4.6))
    write_volume(tmp_path / "src_mask.tif", (rng.random((3, 64, 96)) > 0.8).astype(np.uint8) * 255, (50.0, 4.6, 4.6))
    tifffile.imwrite(tmp_path / "tgt.tif", _volume((2, 80, 90), seed=1))  # another lab's stack: no spacing metadata
    args = ["--source", str(tmp_path / "src.tif"), "--source-labels", str(tmp_path / "src_mask.tif"), "--target", str(tmp_path / "tgt.tif")]
    result = _cli("prepare_data.py", "pair", *args, "--out-dir", str(tmp_path / "prepared"))
    assert result.returncode == 1 and result.stderr.strip().endswith("tgt.tif: the target volume has no spacing metadata; pass --target-spacing z,y,x (nm).")
    assert not (tmp_path / "prepared").exists()
    result = _cli("prepare_data.py", "pair", *args, "--out-dir", str(tmp_path), "--target-spacing", "40,8,8")
    assert result.returncode == 1 and "prepared dataset" not in result.stdout and sorted(p.name for p in tmp_path.iterdir()) == ["src.tif", "src_mask.tif", "tgt.tif"]
    result = _cli("prepare_data.py", "pair", *args, "--out-dir", str(tmp_path / "prepared"), "--target-spacing", "40,8,8")
    assert result.returncode == 0, result.stderr
    dataset = tmp_path / "prepared" / "source_to_target"
    datalist = json.loads((dataset / "datalist.json").read_text())
    assert all("label" in e for e in datalist["training"] + datalist["validation"])
    assert datalist["target_test"] == [] and not any("label" in e for e in datalist["target_training"] + datalist["target_volumes"])
    image, spacing = open_volume(dataset / datalist["target_volumes"][0]["image"]).shape, open_volume(dataset / datalist["target_volumes"][0]["image"]).spacing
    assert image == (2, 80, 90) and spacing == pytest.approx((40.0, 8.0, 8.0))
    with pytest.raises(EMDataError, match="there is nothing to evaluate"):
        load_datalist(dataset, "target_test", required=True)
