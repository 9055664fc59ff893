"""Readers and writers: every format round-trips (Z, Y, X) data and spacing; bad input fails clearly."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from custom.data import EMDataError, EMVolumeReader, binarize, read_label, read_volume, write_volume
from custom.data.datalist import check_pair

SPACING = (40.0, 5.0, 4.5)


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (3, 20, 30), dtype=np.uint8)


@pytest.mark.parametrize("suffix", ["tif", "nii.gz", "zarr"])
def test_written_volume_round_trips_with_spacing(tmp_path, volume, suffix):
    path = write_volume(tmp_path / f"v.{suffix}", volume, SPACING)
    data, spacing = read_volume(path)
    np.testing.assert_array_equal(np.asarray(data), volume)
    np.testing.assert_allclose(spacing, SPACING, rtol=1e-5)


@pytest.mark.parametrize("suffix", ["mha", "nrrd"])
def test_itk_formats_read_in_zyx_order(tmp_path, volume, suffix):
    import itk

    image = itk.image_from_array(volume)  # ITK arrays are (z, y, x)
    image.SetSpacing([4.5, 5.0, 40.0])  # ITK spacing is (x, y, z)
    itk.imwrite(image, str(tmp_path / f"v.{suffix}"))
    data, spacing = read_volume(tmp_path / f"v.{suffix}")
    np.testing.assert_array_equal(data, volume)
    np.testing.assert_allclose(spacing, SPACING)


def test_multipage_tiff_without_metadata_has_unknown_spacing(tmp_path, volume):
    tifffile.imwrite(tmp_path / "stack.tif", volume)
    data, spacing = read_volume(tmp_path / "stack.tif")
    np.testing.assert_array_equal(data, volume)
    assert spacing is None
    assert read_volume(tmp_path / "stack.tif", spacing=SPACING)[1] == SPACING


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_folder_of_sections_stacks_in_name_order(tmp_path, volume, suffix):
    for z, section in enumerate(volume):
        Image.fromarray(section).save(tmp_path / f"{z:02d}.{suffix}")
    data, _ = read_volume(tmp_path)
    np.testing.assert_array_equal(data, volume)


def test_zarr_lazy_keeps_data_on_disk(tmp_path, volume):
    write_volume(tmp_path / "v.zarr", volume, SPACING)
    data, spacing = read_volume(tmp_path / "v.zarr", lazy=True)
    assert not isinstance(data, np.ndarray)
    np.testing.assert_array_equal(data[1], volume[1])
    assert spacing == SPACING


def test_rgb_mask_uses_chosen_channel_and_grey_rgb_is_accepted(tmp_path):
    rgb = np.zeros((10, 12, 4), np.uint8)
    rgb[2:5, 3:6, 0] = 255
    Image.fromarray(rgb).save(tmp_path / "mask.png")
    label, _ = read_label(tmp_path / "mask.png", threshold=127, channel=0)
    assert label.shape == (1, 10, 12) and label.sum() == 9
    with pytest.raises(EMDataError, match="colour channels"):
        read_volume(tmp_path / "mask.png")
    grey = np.repeat(np.arange(120, dtype=np.uint8).reshape(10, 12, 1), 3, axis=2)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_volume(tmp_path / "grey.png")[0][0], grey[..., 0])


def test_binarize_rules():
    label = np.array([0, 1, 100, 200, 255])
    np.testing.assert_array_equal(binarize(label), [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(binarize(label, threshold=127), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(binarize(np.array([0, 255, 0]), value_map={0: 1, 255: 0}), [1, 0, 1])
    with pytest.raises(EMDataError, match="not in the value map"):
        binarize(label, value_map={0: 0, 255: 1})


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(EMDataError, match="missing.tif: file not found"):
        read_volume(tmp_path / "missing.tif")


def test_wrong_ndim_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "4d.tif", np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(EMDataError, match=r"expected a 2D section or a \(Z, Y, X\) volume"):
        read_volume(tmp_path / "4d.tif")


def test_corrupt_tiff_is_refused(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(EMDataError, match="bad.tif: cannot be read as TIFF"):
        read_volume(tmp_path / "bad.tif")


def test_bad_spacing_is_refused(tmp_path, volume):
    with pytest.raises(EMDataError, match="spacing must be three positive numbers"):
        write_volume(tmp_path / "v.tif", volume, (0.0, 5.0, 5.0))


def test_shape_mismatch_and_empty_label_are_refused(volume):
    with pytest.raises(EMDataError, match="differ"):
        check_pair(volume, np.ones((3, 20, 29), np.uint8), "pair")
    with pytest.raises(EMDataError, match="empty"):
        check_pair(volume, np.zeros_like(volume), "pair")


def test_existing_output_is_kept_without_overwrite(tmp_path, volume):
    path = write_volume(tmp_path / "v.tif", volume, SPACING)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_volume(path, volume * 0, SPACING)
    np.testing.assert_array_equal(read_volume(path)[0], volume)


def test_monai_image_reader_gives_spacing_affine(tmp_path, volume):
    from monai.transforms import LoadImage

    write_volume(tmp_path / "v.tif", volume, SPACING)
    image = LoadImage(reader=EMVolumeReader(), image_only=True, ensure_channel_first=True)(str(tmp_path / "v.tif"))
    assert tuple(image.shape) == (1, 3, 20, 30)
    np.testing.assert_allclose(np.diag(np.asarray(image.affine))[:3], SPACING)
    assert image.meta["spacing_known"]
