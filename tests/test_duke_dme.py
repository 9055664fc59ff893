"""Duke DME OCT reader on small subject files the tests write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from custom.data import EMDataError
from custom.data.datasets import get_duke_dme_paths, load_duke_dme


def _duke_subject(path: Path, traced: tuple[int, ...] = (1, 3)) -> None:
    """A small Duke-DME-like subject: 5 B-scans of 20 x 6, boundaries traced on ``traced`` scans."""
    images = np.random.default_rng(0).integers(0, 255, (20, 6, 5), dtype=np.uint8)
    layers = np.full((8, 6, 5), np.nan)
    fluid = np.full((20, 6, 5), np.nan)
    for i in traced:
        layers[:, :, i] = np.arange(2, 18, 2)[:, None]
        layers[:, 5, i] = np.nan  # one column not traced
        fluid[:, :, i] = 0
        fluid[8:10, 1:3, i] = 1
    savemat(path, {"images": images, "manualLayers1": layers, "manualLayers2": layers, "manualFluid1": fluid, "manualFluid2": fluid})


def test_duke_dme_reader_returns_traced_scans_with_layer_labels(tmp_path):
    _duke_subject(tmp_path / "Subject_01.mat")
    subject = load_duke_dme(tmp_path / "Subject_01.mat")
    assert subject["index"].tolist() == [1, 3]
    assert subject["image"].shape == subject["layers"].shape == subject["fluid"].shape == (2, 20, 6)
    column = subject["layers"][0, :, 0]
    assert column[:2].tolist() == [0, 0] and column[2:4].tolist() == [1, 1] and column[14:16].tolist() == [7, 7] and column[16:].max() == 0
    assert (subject["layers"][:, :, 5] == 255).all()  # untraced column is ignored
    assert subject["fluid"][0, 8:10, 1:3].all() and subject["fluid"].sum() == 2 * 4


def test_duke_dme_reader_explains_a_wrong_file(tmp_path):
    savemat(tmp_path / "Subject_02.mat", {"images": np.zeros((4, 4, 2))})
    with pytest.raises(EMDataError, match="missing"):
        load_duke_dme(tmp_path / "Subject_02.mat")
    with pytest.raises(EMDataError, match="no Subject_"):
        (tmp_path / "duke_dme").mkdir()
        (tmp_path / "duke_dme" / "readme.txt").write_text("x")
        get_duke_dme_paths(tmp_path)
