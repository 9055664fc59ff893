"""The synthetic domain pair: layout, geometry and a real shift between the two microscopes."""

from __future__ import annotations

import numpy as np
import pytest

from custom.data import SOURCE_MICROSCOPE, TARGET_MICROSCOPE, load_datalist, read_volume, synthesize_volume


def test_volume_geometry_follows_the_microscope():
    image, label, spacing = synthesize_volume(TARGET_MICROSCOPE, n_sections=2, extent_nm=650.0, seed=3)
    assert image.dtype == np.uint8 and label.dtype == np.uint8
    assert image.shape == label.shape == (2, 100, 100)
    assert spacing == (TARGET_MICROSCOPE.section_nm, 6.5, 6.5)
    assert set(np.unique(label)) <= {0, 1}


def test_same_seed_same_volume():
    a = synthesize_volume(SOURCE_MICROSCOPE, n_sections=1, extent_nm=500.0, seed=7)
    b = synthesize_volume(SOURCE_MICROSCOPE, n_sections=1, extent_nm=500.0, seed=7)
    np.testing.assert_array_equal(a[0], b[0])


def test_microscopes_differ_in_contrast_noise_and_pixel_size():
    src, src_label, _ = synthesize_volume(SOURCE_MICROSCOPE, n_sections=2, extent_nm=1000.0, seed=0)
    tgt, tgt_label, _ = synthesize_volume(TARGET_MICROSCOPE, n_sections=2, extent_nm=1000.0, seed=0)
    assert src.shape[-1] > tgt.shape[-1]  # 5 nm vs 6.5 nm pixels over the same field of view
    # organelles are darker than cytoplasm in both, but the contrast between them differs
    src_gap = src[src_label == 0].mean() - src[src_label == 1].mean()
    tgt_gap = tgt[tgt_label == 0].mean() - tgt[tgt_label == 1].mean()
    assert src_gap > 0 and tgt_gap > 0 and src_gap > 1.5 * tgt_gap
    # high-frequency noise: pixel-to-pixel differences inside the background
    assert np.abs(np.diff(tgt.astype(float), axis=-1)).mean() > np.abs(np.diff(src.astype(float), axis=-1)).mean()
    for label in (src_label, tgt_label):
        assert 0.03 < label.mean() < 0.5


def test_dataset_layout_and_splits(synthetic_dir):
    source = load_datalist(synthetic_dir, "training")[0]
    test = load_datalist(synthetic_dir, "target_test")[0]
    whole, spacing = read_volume(load_datalist(synthetic_dir, "target_volumes")[0]["image"])
    train, _ = read_volume(load_datalist(synthetic_dir, "target_training")[0]["image"])
    test_image, _ = read_volume(test["image"])
    assert spacing == (40.0, 6.5, 6.5)
    assert train.shape[-1] + test_image.shape[-1] == whole.shape[-1]
    np.testing.assert_array_equal(test_image, whole[..., -test_image.shape[-1]:])
    assert "label" in source and read_volume(source["label"])[0].any()


def test_a_milder_shift_interpolates_the_microscopes_and_gets_its_own_dataset(tmp_path):
    from custom.data import ensure_synthetic_dataset, shifted_target

    assert shifted_target(1.0) == TARGET_MICROSCOPE and shifted_target(0.0) == SOURCE_MICROSCOPE
    half = shifted_target(0.5)
    assert half.pixel_size_nm == 5.75 and half.contrast == (SOURCE_MICROSCOPE.contrast + TARGET_MICROSCOPE.contrast) / 2
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        shifted_target(1.5)
    root = ensure_synthetic_dataset(tmp_path / "pair", n_sections=1, extent_nm=500.0, shift=0.5)
    assert read_volume(load_datalist(root, "target_volumes")[0]["image"])[1] == (40.0, 5.75, 5.75)
