"""EM transforms: validation errors, resampling, label fractions, histogram matching, AdaBN, TENT."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from custom.data import EMDataError, write_volume
from custom.data.readers import spacing_affine
from custom.handlers import TENTHandler, adapt_batchnorm, minimize_entropy, prediction_entropy
from custom.networks import UNet
from custom.transforms import CropFractiond, HistogramMatchd, ResampleToPixelSized, ValidateVolumed, uses_target_labels


def _image(shape=(1, 2, 16, 20), spacing=(40.0, 4.0, 4.0), known=True) -> MetaTensor:
    data = torch.rand(shape)
    return MetaTensor(data, affine=torch.as_tensor(spacing_affine(spacing)), meta={"filename_or_obj": "vol.tif", "spacing_known": known})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"image": _image((2, 2, 8, 8))}, "one grey channel"),
        ({"image": _image() * float("nan")}, "NaN or Inf"),
        ({"image": _image() * 0}, "constant"),
        ({"image": _image(), "label": torch.ones(1, 2, 16, 19)}, "label shape"),
        ({"image": _image(), "label": torch.full((1, 2, 16, 20), 3.0)}, "outside classes"),
        ({"image": _image(), "label": torch.zeros(1, 2, 16, 20)}, "empty"),
    ],
)
def test_validation_errors_name_the_file(data, message):
    with pytest.raises(EMDataError, match=message):
        ValidateVolumed()(data)


def test_resampling_to_pixel_size_keeps_sections():
    out = ResampleToPixelSized("image", pixel_size_nm=8.0)({"image": _image()})["image"]
    assert tuple(out.shape) == (1, 2, 8, 10)
    with pytest.raises(EMDataError, match="spacing unknown"):
        ResampleToPixelSized("image", pixel_size_nm=8.0)({"image": _image(known=False)})
    assert tuple(ResampleToPixelSized("image", 0)({"image": _image()})["image"].shape) == (1, 2, 16, 20)


def test_label_fraction_crop_and_its_bounds():
    out = CropFractiond(["image"], stop=0.5)({"image": torch.zeros(1, 2, 4, 10)})
    assert out["image"].shape[-1] == 5
    for stop in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="label fraction"):
            CropFractiond(["image"], stop=stop)
    assert uses_target_labels(0.0) is False and uses_target_labels(1.0) is True
    for fraction in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"target_label_fraction must lie in \[0, 1\]"):
            uses_target_labels(fraction)


def test_histogram_matching_moves_source_intensities_to_the_reference(tmp_path):
    rng = np.random.default_rng(0)
    reference = (rng.normal(60, 10, (2, 32, 32)).clip(0, 255)).astype(np.uint8)
    write_volume(tmp_path / "ref.tif", reference, (40.0, 5.0, 5.0))
    source = torch.as_tensor(rng.normal(180, 30, (1, 2, 32, 32)), dtype=torch.float32)
    out = HistogramMatchd("image", str(tmp_path / "ref.tif"))({"image": source})["image"]
    assert abs(float(out.mean()) - reference.mean()) < 2 and abs(float(out.std()) - reference.std()) < 2
    assert torch.equal(HistogramMatchd("image", "")({"image": source})["image"], source)


def test_adabn_replaces_batchnorm_statistics_with_target_ones():
    net = UNet(2, channels=(4, 8)).eval()
    target = [torch.randn(4, 1, 16, 16) * 3 + 5 for _ in range(3)]
    assert adapt_batchnorm(net, target) == 3
    first_bn = net.encoder[0][0].adn.N
    assert abs(float(first_bn.running_mean.mean())) > 0.1  # moved away from the initial 0
    assert not net.training  # the evaluation mode it had is restored


def test_tent_lowers_entropy_and_moves_only_batchnorm_affine_parameters():
    torch.manual_seed(0)
    net = UNet(2, channels=(4, 8)).eval()
    net.encoder[0][0].conv.weight.requires_grad_(False)  # a frozen flag the adaptation must give back
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    target = [torch.randn(4, 1, 16, 16) * 3 + 5 for _ in range(2)]
    entropies = minimize_entropy(net, iter(target * 10), steps=15, lr=1e-2)
    assert len(entropies) == 15 and entropies[-1] < entropies[0]
    with torch.no_grad():
        assert float(prediction_entropy(net.train()(target[0]))) < entropies[0]
    moved = {name for name, p in net.named_parameters() if not torch.equal(p, before[name])}
    assert moved and all(".adn.N." in name for name in moved)
    assert not net.encoder[0][0].conv.weight.requires_grad and net.encoder[0][1].conv.weight.requires_grad
    with pytest.raises(ValueError, match="at least one step"):
        minimize_entropy(net, iter(target), steps=0)


def test_tent_handler_reuses_its_loader_and_refuses_an_empty_one(caplog):
    caplog.set_level("INFO", logger="custom.handlers.tent")
    net = UNet(2, channels=(4, 8)).eval()
    engine = SimpleNamespace(state=SimpleNamespace(device="cpu"))
    TENTHandler(net, [{"image": torch.randn(2, 1, 16, 16)}], steps=3)(engine)  # one batch, three passes
    assert "TENT: 3 steps" in caplog.text
    with pytest.raises(ValueError, match="no target batch"):
        TENTHandler(net, [], steps=3)(engine)
