"""Blockwise segmentation equals whole-volume MONAI inference; resumes; shards over torchrun ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
import zarr
from monai.inferers import SliceInferer, sliding_window_inference
from monai.transforms import NormalizeIntensity

from custom.data import EMDataError
from custom.data.lazy import open_volume
from custom.data.writers import write_volume
from custom.inference import (
    AugmentedWindowInferer,
    ResampledPredictor,
    VolumePredictor,
    WindowNetwork,
    label_instances,
    make_volume_inferer,
    segment_volume,
    sliding_window_blocks,
)
from custom.networks import UNet

from .conftest import REPO_ROOT


def _conv_net(spatial_dims: int) -> torch.nn.Module:
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    torch.manual_seed(0)
    return torch.nn.Sequential(conv(1, 4, 3, padding=1), torch.nn.ReLU(), conv(4, 2, 3, padding=1)).eval()


def _volume(shape=(5, 70, 90), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(120, 30, shape)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(12))
def test_blocks_reproduce_whole_volume_sliding_window(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(4, 32, 3))
    roi = tuple(int(rng.integers(1, s + 1)) for s in shape)
    overlap = float(rng.choice([0.0, 0.25, 0.5, 0.7]))
    block = tuple(int(rng.integers(1, s + 1)) for s in shape)
    net = _conv_net(3)
    x = torch.from_numpy(rng.normal(size=(1, 1, *shape)).astype(np.float32))
    with torch.no_grad():
        whole = sliding_window_inference(x, roi, 3, net, overlap=overlap, mode="gaussian")
        out = torch.full_like(whole, float("nan"))
        for b in sliding_window_blocks(shape, roi, overlap, block):
            pred = sliding_window_inference(x[(..., *b.region)], roi, 3, net, overlap=overlap, mode="gaussian")
            out[(..., *b.core)] = pred[(..., *b.core_in_region)]
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)


def test_an_axis_shorter_than_the_window_is_one_padded_block():
    blocks = sliding_window_blocks((4, 50, 200), (1, 64, 64), 0.25, (4, 32, 64))
    assert all(b.core[1] == b.region[1] == slice(0, 50) for b in blocks) and len(blocks) > 1
    net = _conv_net(2)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 4, 50, 200)).astype(np.float32))
    predictor = VolumePredictor(net, 2, (64, 64), channels_last=False)
    whole = predictor(x[0, 0].numpy())
    out = np.full_like(whole, np.nan)
    for b in blocks:
        out[(..., *b.core)] = predictor(x[0, 0].numpy()[b.region])[(..., *b.core_in_region)]
    np.testing.assert_allclose(out, whole, atol=1e-5)


def _plain_monai_probability(volume: np.ndarray, net: torch.nn.Module, roi, overlap) -> np.ndarray:
    """The reference: z-score the whole volume, MONAI SliceInferer, softmax foreground."""
    x = NormalizeIntensity()(torch.from_numpy(volume.astype(np.float32)))[None, None]
    with torch.no_grad():
        logits = SliceInferer(spatial_dim=0, roi_size=roi, sw_batch_size=4, overlap=overlap, mode="gaussian")(x, net)
    return torch.softmax(logits, 1)[0, 1].numpy()


@pytest.mark.parametrize("channels_last", [False, True])
def test_segment_volume_equals_plain_monai(tmp_path, channels_last):
    volume = _volume()
    tifffile.imwrite(tmp_path / "in.tif", volume)
    net = UNet(2, channels=(4, 8, 16)).eval()
    reference = _plain_monai_probability(volume, net, (32, 48), 0.25)
    predictor = VolumePredictor(net, 2, (32, 48), overlap=0.25, sw_batch_size=7, channels_last=channels_last)
    summary = segment_volume(
        open_volume(tmp_path / "in.tif"), predictor, tmp_path / "out.zarr", block_shape=(2, 40, 40), prob_dtype="float16", progress=False, spacing=(50.0, 5.0, 5.0)
    )
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    prob = root["probability"][...].astype(np.float32)
    assert summary["blocks"] > 4 and root.attrs["segmentation"]["complete"]
    np.testing.assert_allclose(prob, reference, atol=2e-3)  # float16 storage
    certain = np.abs(reference - 0.5) > 1e-4
    np.testing.assert_array_equal(root["labels/mask/0"][...][certain], (reference > 0.5)[certain])
    assert root.attrs["multiscales"][0]["datasets"][0]["path"] == "probability"
    assert root.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [50.0, 5.0, 5.0]


def test_segment_volume_3d_anisotropic_roi(tmp_path):
    volume = _volume((12, 40, 44), seed=1)
    net = _conv_net(3)
    predictor = VolumePredictor(net, 3, (4, 16, 16), overlap=0.5, channels_last=False)
    write_volume(tmp_path / "in.nii.gz", volume, (40.0, 4.0, 4.0))
    lazy = open_volume(tmp_path / "in.nii.gz")
    assert lazy.spacing == (40.0, 4.0, 4.0) and lazy.shape == volume.shape
    segment_volume(lazy, predictor, tmp_path / "out.tif", block_shape=(4, 16, 16), progress=False)
    x = NormalizeIntensity()(torch.from_numpy(volume.astype(np.float32)))[None, None]
    with torch.no_grad():
        reference = torch.softmax(sliding_window_inference(x, (4, 16, 16), 4, net, overlap=0.5, mode="gaussian"), 1)[0, 1].numpy()
    prob = tifffile.imread(tmp_path / "out_prob.tif")
    np.testing.assert_allclose(prob / 255.0, reference, atol=0.5 / 255 + 1e-6)


class _Crash(RuntimeError):
    pass


class _CrashAfter:
    """A predictor that dies after ``n`` blocks, like a killed process."""

    def __init__(self, predictor: VolumePredictor, n: int) -> None:
        self.predictor, self.n = predictor, n

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def __call__(self, region):
        if self.n == 0:
            raise _Crash
        self.n -= 1
        return self.predictor(region)


def test_killed_run_resumes_and_skips_finished_blocks(tmp_path):
    volume = _volume((4, 64, 64), seed=2)
    tifffile.imwrite(tmp_path / "in.tif", volume)
    predictor = VolumePredictor(UNet(2, channels=(4, 8)).eval(), 2, (32, 32))
    lazy = open_volume(tmp_path / "in.tif", spacing=(50.0, 5.0, 5.0))
    kwargs = {"block_shape": (1, 32, 32), "progress": False, "num_workers": 0}
    with pytest.raises(_Crash):
        segment_volume(lazy, _CrashAfter(predictor, 5), tmp_path / "out.zarr", **kwargs)
    assert not zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs["segmentation"]["complete"]
    resumed = segment_volume(lazy, predictor, tmp_path / "out.zarr", **kwargs)
    assert resumed["skipped"] == 5 and resumed["processed"] == resumed["blocks"] - 5
    segment_volume(lazy, predictor, tmp_path / "fresh.zarr", **kwargs)
    a, b = (zarr.open_group(str(tmp_path / n), mode="r") for n in ("out.zarr", "fresh.zarr"))
    np.testing.assert_array_equal(a["probability"][...], b["probability"][...])
    assert not (tmp_path / "out.zarr.progress").exists()
    with pytest.raises(EMDataError, match="--overwrite"):
        segment_volume(lazy, predictor, tmp_path / "out.zarr", **kwargs)


def test_blockwise_instances_match_whole_volume_labelling():
    import cc3d

    rng = np.random.default_rng(3)
    mask = (rng.random((9, 40, 40)) > 0.6).astype(np.uint8)
    cores = [b.core for b in sliding_window_blocks(mask.shape, (1, 8, 8), 0.0, (3, 8, 16))]
    labels = np.zeros(mask.shape, np.uint32)
    count, removed = label_instances(mask, labels, cores)
    reference, n = cc3d.connected_components(mask, connectivity=6, return_N=True)
    assert (count, removed) == (n, 0)
    pairs = np.unique(np.stack([labels[mask > 0], reference[mask > 0]], 1), axis=0)
    assert len(pairs) == n  # a one-to-one relabelling
    assert set(np.unique(labels)) == set(range(n + 1))


@pytest.mark.parametrize("min_size", [2, 5, 40])
def test_blockwise_instances_drop_objects_smaller_than_min_size_counted_across_blocks(min_size):
    import cc3d

    rng = np.random.default_rng(4)
    mask = (rng.random((9, 40, 40)) > 0.6).astype(np.uint8)
    cores = [b.core for b in sliding_window_blocks(mask.shape, (1, 8, 8), 0.0, (3, 8, 16))]
    labels = np.zeros(mask.shape, np.uint32)
    count, removed = label_instances(mask, labels, cores, min_size=min_size)
    reference, n = cc3d.connected_components(mask, connectivity=6, return_N=True)
    kept = cc3d.dust(reference, threshold=min_size, connectivity=6)
    assert count == len(np.unique(kept)) - 1 and count + removed == n and removed > 0
    np.testing.assert_array_equal(labels > 0, kept > 0)
    pairs = np.unique(np.stack([labels[kept > 0], kept[kept > 0]], 1), axis=0)
    assert len(pairs) == count and set(np.unique(labels)) == set(range(count + 1))


def test_window_network_flip_tta_averages_flipped_predictions():
    net = _conv_net(2)
    x = torch.randn(2, 1, 16, 16)
    tta = WindowNetwork(net, 2, channels_last=False, flip_axes=(0, 1))
    with torch.no_grad():
        expected = (net(x) + net(x.flip(2)).flip(2) + net(x.flip(3)).flip(3)) / 3
        torch.testing.assert_close(tta(x), expected)


def test_window_network_rot90_tta_averages_rotations_and_needs_square_windows():
    net = _conv_net(2)
    x = torch.randn(2, 1, 16, 16)
    tta = WindowNetwork(net, 2, channels_last=False, rot90=True)
    with torch.no_grad():
        expected = sum(torch.rot90(net(torch.rot90(x, k, (2, 3))), -k, (2, 3)) for k in range(4)) / 4
        torch.testing.assert_close(tta(x), expected)
        with pytest.raises(ValueError, match="square"):
            tta(torch.randn(1, 1, 16, 24))
    with pytest.raises(ValueError, match="square in-plane roi"):
        VolumePredictor(net, 2, (16, 24), tta_rot90=True)


def test_volume_inferer_tta_averages_each_window_over_flips_and_rotations():
    net = _conv_net(2)
    volume = torch.randn(1, 1, 3, 24, 24)
    plain = make_volume_inferer(2, (16, 16), overlap=0.5)
    augmented = make_volume_inferer(2, (16, 16), overlap=0.5, flip_axes=(-2, -1), rot90=True)
    assert isinstance(augmented, AugmentedWindowInferer)
    with torch.no_grad():
        expected = plain(volume, WindowNetwork(net, 2, channels_last=False, flip_axes=(-2, -1), rot90=True))
        torch.testing.assert_close(augmented(volume, net), expected)
        assert not torch.allclose(augmented(volume, net), plain(volume, net))
    assert make_volume_inferer(2, (16, 16), flip_axes=None).__class__ is plain.__class__
    with pytest.raises(ValueError, match="square in-plane roi"):
        make_volume_inferer(2, (16, 24), rot90=True)


def test_lazy_readers_match_eager(tmp_path):
    volume = _volume((3, 20, 30))
    (tmp_path / "sections").mkdir()
    for i, section in enumerate(volume):
        tifffile.imwrite(tmp_path / "sections" / f"{i:03d}.tif", section)
    write_volume(tmp_path / "v.zarr", volume, (50.0, 5.0, 5.0))
    tifffile.imwrite(tmp_path / "v.tif", volume, compression="zlib")
    box = (slice(1, 3), slice(5, 17), slice(2, 29))
    for path in ("sections", "v.zarr", "v.tif"):
        lazy = open_volume(tmp_path / path)
        assert lazy.shape == volume.shape
        np.testing.assert_array_equal(lazy.read(box), volume[box])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing.tif", "not found"),
        (lambda p: (tifffile.imwrite(p / "4d.tif", np.zeros((2, 2, 8, 8, 2), np.uint8)), p / "4d.tif")[1], "volume"),
        (lambda p: (zarr.create_array(str(p / "s.zarr"), shape=(2, 8, 8), dtype="<U2"), p / "s.zarr")[1], "numeric"),
    ],
)
def test_bad_input_gives_one_clear_error_and_no_output(tmp_path, make, match):
    predictor = VolumePredictor(_conv_net(2), 2, (32, 32), channels_last=False)
    with pytest.raises(EMDataError, match=match):
        segment_volume(open_volume(make(tmp_path)), predictor, tmp_path / "out.zarr", progress=False, spacing=(50.0, 5.0, 5.0))
    assert not (tmp_path / "out.zarr").exists()


def _segment_cli(args: list[str], nproc: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([*runner, str(REPO_ROOT / "scripts" / "segment.py"), "run", *args], capture_output=True, text=True, env=env, check=check, timeout=600)


def test_torchrun_two_processes_equal_one_process_bit_for_bit(tmp_path, checkpoint):
    write_volume(tmp_path / "in.zarr", _volume((4, 96, 100), seed=4), (50.0, 5.0, 5.0))
    common = ["--checkpoint", checkpoint, "--device", "cpu", "--roi-size", "64,64", "--block-shape", "1,64,64", "--instances", "--prob-dtype", "float16"]
    _segment_cli([str(tmp_path / "in.zarr"), str(tmp_path / "one.zarr"), *common])
    result = _segment_cli([str(tmp_path / "in.zarr"), str(tmp_path / "two.zarr"), *common], nproc=2)
    assert '"world_size": 2' in result.stdout
    one, two = (zarr.open_group(str(tmp_path / n), mode="r") for n in ("one.zarr", "two.zarr"))
    for key in ("probability", "labels/mask/0", "labels/instances/0"):
        np.testing.assert_array_equal(one[key][...], two[key][...])
    assert two.attrs["segmentation"]["complete"]


def test_cli_refuses_existing_output_without_overwrite(tmp_path, checkpoint):
    tifffile.imwrite(tmp_path / "in.tif", _volume((2, 64, 64)))
    args = [str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), "--checkpoint", checkpoint, "--roi-size", "64,64"]
    _segment_cli(args)
    before = (tmp_path / "out_mask.tif").read_bytes()
    result = _segment_cli(args, check=False)
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (tmp_path / "out_mask.tif").read_bytes() == before


def test_onnxruntime_backend_matches_torch():
    pytest.importorskip("onnxruntime")
    region = np.random.default_rng(5).normal(size=(3, 40, 50)).astype(np.float32)
    net = UNet(2, channels=(4, 8)).eval()
    torch_prob = VolumePredictor(net, 2, (32, 32), sw_batch_size=4)(region)
    onnx_prob = VolumePredictor(net, 2, (32, 32), sw_batch_size=4, backend="onnxruntime")(region)
    np.testing.assert_allclose(onnx_prob, torch_prob, atol=1e-5)


def test_prefetching_keeps_only_the_blocks_in_flight():
    """A read-ahead queue must drop regions once yielded (it held the whole volume before)."""
    import gc
    import weakref
    from types import SimpleNamespace

    from custom.inference.blockwise import _prefetched

    class Region(np.ndarray):
        pass

    alive = set()

    class FakeVolume:
        def read(self, region):
            array = np.zeros(1000).view(Region)
            alive.add(id(array))
            weakref.finalize(array, alive.discard, id(array))
            return array

    blocks = [SimpleNamespace(region=i) for i in range(12)]
    peak = 0
    for _, region in _prefetched(FakeVolume(), blocks, workers=2):
        del region
        gc.collect()
        peak = max(peak, len(alive))
    assert peak <= 3  # the two read ahead (plus one being handed over)


# -- the pixel size of inputs (issue #33, items 1, 2 and 7) -----------------------------------------
def test_cli_records_the_spacing_it_assumed_and_the_one_given(tmp_path, checkpoint):
    tifffile.imwrite(tmp_path / "in.tif", _volume((2, 64, 64)))
    common = ["--checkpoint", checkpoint, "--device", "cpu", "--roi-size", "64,64"]
    result = _segment_cli([str(tmp_path / "in.tif"), str(tmp_path / "assumed.zarr"), *common])
    root = zarr.open_group(str(tmp_path / "assumed.zarr"), mode="r")
    assert root.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [5.0, 5.0, 5.0]  # the model's pixel size
    assert root["labels/mask"].attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [5.0, 5.0, 5.0]
    assert "assumed to be at the model's 5 nm" in root.attrs["segmentation"]["spacing_note"] and "--input-spacing" in result.stderr
    _segment_cli([str(tmp_path / "in.tif"), str(tmp_path / "given.zarr"), *common, "--input-spacing", "40,4.6,4.6"])
    root = zarr.open_group(str(tmp_path / "given.zarr"), mode="r")
    assert root.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [40.0, 4.6, 4.6]
    assert "spacing_note" not in root.attrs["segmentation"]


def test_resampled_predictor_keeps_the_input_grid_and_equals_whole_volume_resampling(tmp_path):
    net = UNet(2, channels=(4, 8, 16)).eval()
    volume = _volume((3, 90, 100), seed=6)
    predictor = VolumePredictor(net, 2, (32, 32), overlap=0.25, channels_last=False)
    resampled = ResampledPredictor(predictor, (0.6, 0.6))  # 3 nm input, 5 nm model
    assert resampled.volume_roi == (1, 54, 54)
    write_volume(tmp_path / "in.zarr", volume, (40.0, 3.0, 3.0))
    segment_volume(open_volume(tmp_path / "in.zarr"), resampled, tmp_path / "out.zarr", block_shape=(1, 60, 60), prob_dtype="float16", progress=False)
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    prob = root["probability"][...].astype(np.float32)
    assert prob.shape == volume.shape
    assert root.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [40.0, 3.0, 3.0]
    normalised = (volume - volume.mean()) / volume.std()
    reference = resampled(normalised.astype(np.float32))  # the whole volume resampled at once
    assert np.abs(prob - reference).mean() < 0.01
    x = torch.from_numpy(normalised.astype(np.float32))[:, None]
    small = torch.nn.functional.interpolate(x, size=(54, 60), mode="bilinear", antialias=True)[:, 0].numpy()
    assert predictor(small).shape == (3, 54, 60)  # what the model saw: the 5 nm grid
    with pytest.raises(ValueError, match="two positive factors"):
        ResampledPredictor(predictor, (0.0, 1.0))


def test_cli_resample_needs_a_spacing_and_keeps_the_input_grid(tmp_path, checkpoint):
    tifffile.imwrite(tmp_path / "in.tif", _volume((2, 96, 96)))
    common = ["--checkpoint", checkpoint, "--device", "cpu", "--roi-size", "64,64", "--resample"]
    result = _segment_cli([str(tmp_path / "in.tif"), str(tmp_path / "out.zarr"), *common], check=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: --resample needs the input's pixel size")
    assert not (tmp_path / "out.zarr").exists()
    summary = json.loads(_segment_cli([str(tmp_path / "in.tif"), str(tmp_path / "out.zarr"), *common, "--input-spacing", "40,4,4"]).stdout)
    assert summary["spacing"] == [40.0, 4.0, 4.0]
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert root["probability"].shape == (2, 96, 96) and root.attrs["segmentation"]["fingerprint"]["resample_zoom"] == [0.8, 0.8]


def test_cli_instances_drop_specks_below_min_size(tmp_path, checkpoint):
    write_volume(tmp_path / "in.zarr", _volume((2, 64, 64), seed=7), (50.0, 5.0, 5.0))
    common = ["--checkpoint", checkpoint, "--device", "cpu", "--roi-size", "64,64", "--instances", "--threshold", "0.5"]
    every = json.loads(_segment_cli([str(tmp_path / "in.zarr"), str(tmp_path / "all.zarr"), *common, "--min-size", "0"]).stdout)
    default = json.loads(_segment_cli([str(tmp_path / "in.zarr"), str(tmp_path / "default.zarr"), *common]).stdout)
    assert every["instances_below_min_size"] == 0 and default["instances"] + default["instances_below_min_size"] == every["instances"]
    labels = zarr.open_group(str(tmp_path / "default.zarr"), mode="r")["labels/instances/0"][...]
    sizes = np.bincount(labels.ravel())[1:]
    assert len(sizes) == default["instances"] and (sizes >= 50).all()
    result = _segment_cli([str(tmp_path / "in.zarr"), str(tmp_path / "bad.zarr"), *common, "--min-size", "-3"], check=False)
    assert result.returncode == 2 and "min_size must be a non-negative whole number" in result.stderr and not (tmp_path / "bad.zarr").exists()
