"""Object-scale matching: typical object areas, and the label-free choice of the target pixel size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from custom.data import EMDataError, write_volume
from custom.inference import match_target_pixel_size, source_reference_area
from custom.inference.scale_match import grid_windows, typical_area
from custom.metrics import section_object_areas


class ThresholdNetwork(nn.Module):
    """Two-class logits that mark bright pixels as foreground, at any scale (a batch norm for AdaBN)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(1, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = 4 * (x - 0.5)
        return torch.cat([-x, x], dim=1) + 0 * self.norm(x).mean()


def disks(radius_px: float, shape: tuple[int, int] = (192, 192), spacing_px: int = 64) -> np.ndarray:
    """One section of bright disks on a regular grid."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.uint8)
    for cy in range(spacing_px // 2, shape[0], spacing_px):
        for cx in range(spacing_px // 2, shape[1], spacing_px):
            out[np.hypot(yy - cy, xx - cx) <= radius_px] = 1
    return out


def test_section_object_areas_counts_objects_per_section():
    mask = np.zeros((2, 10, 10), np.uint8)
    mask[0, 1:3, 1:4], mask[0, 6:9, 6:9], mask[1, 0, 0] = 1, 1, 1
    assert sorted(section_object_areas(mask)) == [1, 6, 9]
    assert section_object_areas(np.zeros((3, 4, 4))).size == 0


def test_typical_area_ignores_speckle():
    areas = np.array([1] * 100 + [1000, 2000])
    assert np.median(areas) == 1
    assert typical_area(areas) == 2000
    assert typical_area(np.zeros(0)) == 0.0


def test_grid_windows_spread_over_a_volume_and_pad_small_ones():
    assert grid_windows(np.random.rand(3, 300, 500).astype(np.float32), (128, 128), 10).shape == (10, 1, 128, 128)
    assert grid_windows(np.random.rand(2, 100, 90).astype(np.float32), (128, 128), 10).shape == (2, 1, 128, 128)
    assert grid_windows(np.random.rand(8, 300, 300).astype(np.float32), (4, 128, 128), 10).shape == (8, 1, 4, 128, 128)


@pytest.mark.parametrize(("target_radius_nm", "expected_factor"), [(80.0, 0.5), (160.0, 1.0), (320.0, 2.0)])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_match_chooses_the_pixel_size_that_restores_the_source_object_size(tmp_path, target_radius_nm, expected_factor, batch_norm):
    # source objects: radius 160 nm, i.e. 16 px at the 10 nm training pixel size; target at 8 nm per pixel
    write_volume(tmp_path / "source_label.tif", disks(16.0, (320, 320), 80)[None].repeat(2, 0), (40.0, 10.0, 10.0))
    target = disks(target_radius_nm / 8.0, (400, 400), int(4 * target_radius_nm / 8.0))[None].repeat(2, 0) * 200 + 20
    write_volume(tmp_path / "target.tif", target.astype(np.uint8), (40.0, 8.0, 8.0))
    assert source_reference_area([tmp_path / "source_label.tif"], 10.0) == pytest.approx(np.pi * 16**2, rel=0.05)
    result = match_target_pixel_size(
        ThresholdNetwork(), None, [tmp_path / "target.tif"], [tmp_path / "source_label.tif"], 10.0, (64, 64),
        factors=(0.5, 1.0, 2.0), out=tmp_path / "match.json", batch_norm_from_target=batch_norm,
    )  # fmt: skip
    assert result["factor"] == expected_factor
    assert result["pixel_size_nm"] == pytest.approx(10.0 * expected_factor)
    assert json.loads((tmp_path / "match.json").read_text())["factor"] == expected_factor
    tried = [c["factor"] for c in result["candidates"]]
    assert 1.0 in tried and expected_factor in tried  # oriented search: the training size, then one side of it
    assert not (0.5 in tried and 2.0 in tried)


def test_match_on_both_sides_tries_every_size_oriented_search_one_side(tmp_path):
    write_volume(tmp_path / "source_label.tif", disks(16.0, (320, 320), 80)[None].repeat(2, 0), (40.0, 10.0, 10.0))
    target = disks(10.0, (400, 400), 40)[None].repeat(2, 0) * 200 + 20  # 80 nm disks at 8 nm: smaller than the source's
    write_volume(tmp_path / "target.tif", target.astype(np.uint8), (40.0, 8.0, 8.0))
    args = (ThresholdNetwork(), None, [tmp_path / "target.tif"], [tmp_path / "source_label.tif"], 10.0, (64, 64))
    both = match_target_pixel_size(*args, factors=(0.5, 1.0, 2.0), side="both")
    assert [c["factor"] for c in both["candidates"]] == [0.5, 1.0, 2.0] and both["factor"] == 0.5
    oriented = match_target_pixel_size(*args, factors=(0.5, 1.0, 2.0))
    assert [c["factor"] for c in oriented["candidates"]] == [0.5, 1.0]
    with pytest.raises(ValueError, match="side"):
        match_target_pixel_size(*args, factors=(1.0,), side="left")


def test_match_refuses_sources_without_objects_or_spacing(tmp_path):
    write_volume(tmp_path / "empty.tif", np.zeros((1, 32, 32), np.uint8), (40.0, 10.0, 10.0))
    with pytest.raises(EMDataError, match="no labelled object"):
        source_reference_area([tmp_path / "empty.tif"], 10.0)
    with pytest.raises(ValueError, match="training pixel size"):
        match_target_pixel_size(ThresholdNetwork(), None, [tmp_path / "empty.tif"], [tmp_path / "empty.tif"], 0.0, (32, 32))
    with pytest.raises(ValueError, match="positive candidate factors"):
        match_target_pixel_size(ThresholdNetwork(), None, [tmp_path / "empty.tif"], [tmp_path / "empty.tif"], 10.0, (32, 32), factors=(0.0, 1.0))
