"""A user's own data: section folders in numeric order, the shared ISBI 2012 PNG layout, a membrane
target from its own folder, re-imaged development targets, and the membrane task through adapt.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from custom.data import Reimaging, load_datalist, read_label, read_volume, reimage, write_volume
from custom.data.datasets import load_isbi2012
from custom.data.lazy import open_volume
from skimage.io import imsave

from .conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
PREPARE = [sys.executable, str(REPO_ROOT / "scripts" / "prepare_data.py")]


def test_unpadded_section_numbers_are_read_in_numeric_order(tmp_path):
    for i in range(12):
        tifffile.imwrite(tmp_path / f"{i}.tif", np.full((4, 5), i, np.uint8))
    assert read_volume(tmp_path)[0][:, 0, 0].tolist() == list(range(12))
    assert open_volume(tmp_path).read((slice(0, 12), slice(0, 1), slice(0, 1))).ravel().tolist() == list(range(12))


def test_isbi2012_png_layout(tmp_path):
    images, labels = tmp_path / "isbi2012" / "train" / "image", tmp_path / "isbi2012" / "train" / "label"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(11):
        imsave(images / f"{i}.png", np.full((8, 8), i, np.uint8), check_contrast=False)
        label = np.full((8, 8), 255, np.uint8)
        label[i % 8] = 0  # one membrane row per section
        imsave(labels / f"{i}.png", label, check_contrast=False)
    image, membrane, spacing = load_isbi2012(tmp_path)
    assert image[:, 0, 0].tolist() == list(range(11)) and spacing == (50.0, 4.0, 4.0)
    assert membrane[10, 2].all() and membrane[10].sum() == 8  # 0 = membrane -> 1


def test_reimage_changes_pixel_size_and_keeps_labels_binary():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (3, 120, 90)).astype(np.uint8)
    label = np.zeros_like(image)
    label[:, 30:90, 20:60] = 1
    out, out_label, spacing = reimage(image, label, (50.0, 4.0, 4.0), Reimaging(pixel_size_factor=2.0, blur_nm=4.0, contrast=0.8, gamma=1.5, noise=0.05))
    assert out.shape == out_label.shape == (3, 60, 45) and out.dtype == np.uint8 and spacing == (50.0, 8.0, 8.0)
    assert set(np.unique(out_label)) == {0, 1} and abs(out_label.mean() - label.mean()) < 0.02
    same, _, _ = reimage(image, None, (50.0, 4.0, 4.0), Reimaging())
    assert np.corrcoef(same.ravel(), image.ravel())[0, 1] > 0.99
    with pytest.raises(ValueError, match="positive"):
        Reimaging(gamma=0)


def test_reimage_command_refuses_its_input_as_output(tmp_path):
    write_volume(tmp_path / "in" / "v.tif", np.zeros((2, 16, 16), np.uint8), (50.0, 5.0, 5.0))
    result = subprocess.run([*PREPARE, "reimage", "--image", str(tmp_path / "in" / "v.tif"), "--out-dir", str(tmp_path / "in")], capture_output=True, text=True)
    assert result.returncode != 0 and "input" in result.stderr and (tmp_path / "in" / "v.tif").exists()


def test_a_prepared_pair_refuses_other_inputs_or_options(tmp_path):
    from prepare_data import pair

    image = np.random.default_rng(0).integers(0, 255, (2, 32, 40)).astype(np.uint8)
    write_volume(tmp_path / "src.tif", image, (50.0, 5.0, 5.0))
    write_volume(tmp_path / "lab.tif", (image > 200).astype(np.uint8) * 255, (50.0, 5.0, 5.0))
    write_volume(tmp_path / "tgt.tif", image, (50.0, 5.0, 5.0))
    args = {"source": str(tmp_path / "src.tif"), "source_labels": str(tmp_path / "lab.tif"), "target": str(tmp_path / "tgt.tif"), "out_dir": str(tmp_path / "out")}
    pair(**args)
    pair(**args)  # the same again: kept
    with pytest.raises(FileExistsError, match="other inputs or options"):
        pair(**args, source_label_threshold=127)


def _vnc_crop(shared_data, folder, sections: int = 4, size: int = 384):
    """A corner of the first sections of VNC stack 1 with membrane labels, as TIFFs with spacing."""
    from custom.data.datasets import load_drosophila_vnc

    image, label, spacing = load_drosophila_vnc(shared_data, target="membranes")
    write_volume(folder / "vnc.tif", image[:sections, :size, :size], spacing)
    write_volume(folder / "vnc_membranes.tif", label[:sections, :size, :size], spacing)
    return folder / "vnc.tif", folder / "vnc_membranes.tif"


def test_membranes_target_from_its_own_folder(shared_data, tmp_path):
    stack = tmp_path / "my_stack"
    stack.mkdir()
    for i in range(3):
        tifffile.imwrite(stack / f"{i}.tif", np.random.default_rng(i).integers(0, 255, (64, 80)).astype(np.uint8))
    out = tmp_path / "prepared"
    cmd = [*PREPARE, "membranes", str(shared_data), str(out), "--target-dir", str(stack), "--target-spacing", "50,4,4"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    direction = out / "vnc_membranes_to_my_stack"
    assert all("label" not in e for e in load_datalist(direction, "target_training")) and load_datalist(direction, "target_test") == []
    target = load_datalist(direction, "target_volumes")[0]["image"]
    assert read_volume(target)[0].shape == (3, 64, 80) and read_volume(target)[1] == (50.0, 4.0, 4.0)


def test_membranes_adapt_through_the_same_command(shared_data, tmp_path):
    source, source_labels = _vnc_crop(shared_data, tmp_path)
    reimaged = tmp_path / "reimaged"
    subprocess.run(
        [*PREPARE, "reimage", "--image", str(source), "--labels", str(source_labels), "--out-dir", str(reimaged),
         "--pixel-size-factor", "1.4", "--gamma", "1.5", "--contrast", "0.7", "--noise", "0.05", "--blur-nm", "4"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    out = tmp_path / "adapted"
    cmd = [
        sys.executable, str(REPO_ROOT / "scripts" / "adapt.py"), "run", "--task", "membranes", "--source", str(source),
        "--source-labels", str(source_labels), "--target", str(reimaged / "image.tif"), "--evaluate", str(reimaged / "label.tif"),
        "--out", str(out), "--candidates", "source_only,adabn,tent", "--threads", "1",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    scores = json.loads((out / "image" / "scores.json").read_text())
    assert scores["pick"] in ("source_only", "adabn", "tent")
    mask = read_label(out / "image" / "segmentation_mask.tif")[0]
    assert mask.shape == read_volume(reimaged / "image.tif")[0].shape and 0.02 < mask.mean() < 0.9  # membranes, not all or nothing
    metrics = json.loads((out / "image" / "evaluation" / scores["pick"] / "metrics.json").read_text())["metrics"]
    assert 0 < metrics["v_rand"] <= 1  # the membrane bundle's evaluation (ISBI scores), not the mitochondria one
    assert "IoU (test labels)" in (out / "report.md").read_text()
