"""Mathematical properties of the discrepancy losses and gradient reversal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from custom.losses import (
    CORALLoss,
    DomainAdversarialLoss,
    MMDLoss,
    class_samples,
    dann_schedule,
    feature_samples,
    grad_reverse,
    labels_at,
)


def test_mmd_near_zero_for_one_distribution_and_grows_with_mean_shift():
    g = torch.Generator().manual_seed(0)
    source = torch.randn(400, 8, generator=g)
    same = torch.randn(400, 8, generator=g)
    mmd = MMDLoss()
    values = [mmd(source, same + shift).item() for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values[0] < 0.02
    assert values == sorted(values) and values[-1] > 10 * max(values[0], 1e-3)


def test_mmd_of_identical_samples_is_zero_with_fixed_bandwidths():
    x = torch.randn(50, 4)
    assert MMDLoss(bandwidths=(1.0, 2.0))(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_coral_matches_numpy_reference():
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(100, 6)), rng.normal(size=(80, 6)) * 2 + 1
    d = xs.shape[1]
    expected = ((np.cov(xs, rowvar=False) - np.cov(xt, rowvar=False)) ** 2).sum() / (4 * d * d)
    got = CORALLoss()(torch.tensor(xs, dtype=torch.float64), torch.tensor(xt, dtype=torch.float64)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_feature_maps_become_location_samples():
    features = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    samples = feature_samples(features, max_samples=None)
    assert samples.shape == (40, 3)
    torch.testing.assert_close(samples[0], features[0, :, 0, 0])
    assert feature_samples(features, max_samples=7).shape == (7, 3)


def test_class_samples_take_the_locations_of_one_class_at_the_feature_resolution():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, :4] = 1  # the top-left quadrant
    labels[0, 4:, 4:] = -1  # ignored
    assert labels_at(labels, (2, 2)).tolist() == [[[1, 0], [0, -1]]]
    features = torch.arange(2 * 2 * 2, dtype=torch.float32).reshape(1, 2, 2, 2)
    torch.testing.assert_close(class_samples(features, labels, 1), features[0, :, 0, 0][None])
    assert class_samples(features, labels, 0).shape == (2, 2)
    assert class_samples(features, labels, 0, max_samples=1).shape == (1, 2)


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(5, requires_grad=True)
    y = grad_reverse(x, scale=0.3)
    torch.testing.assert_close(y, x)
    (y * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * torch.arange(5.0))


def test_domain_loss_and_schedule():
    loss = DomainAdversarialLoss()(torch.zeros(3, 1), torch.zeros(2, 1))
    assert loss.item() == pytest.approx(np.log(2))
    assert dann_schedule(0.0) == 0.0 and dann_schedule(1.0) == pytest.approx(1.0, abs=1e-4)
    assert 0 < dann_schedule(0.1) < dann_schedule(0.5) < 1
