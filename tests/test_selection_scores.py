"""Label-free selection scores (``custom.metrics.selection``) on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from custom.metrics.selection import (
    augmentation_agreement,
    balanced_agreement,
    batch_nuclear_norm,
    bbse_foreground_fraction,
    confusion_rates,
    consensus_agreement,
    dev_risk,
    domain_probability,
    importance_weights,
    information_maximization,
    iwcv_risk,
    mlls_foreground_fraction,
    prediction_entropy,
    soft_neighborhood_density,
    tile_features_and_losses,
)
from custom.networks import UNet


def _probs(foreground: np.ndarray) -> np.ndarray:
    """(1, 2, *shape) background/foreground probabilities from a foreground probability map."""
    return np.stack([1 - foreground, foreground])[None]


def test_entropy_and_information_maximisation_tell_confident_diverse_from_collapsed():
    rng = np.random.default_rng(0)
    diverse = _probs((rng.random((32, 32)) > 0.5).astype(float) * 0.98 + 0.01)  # confident, both classes
    collapsed = _probs(np.full((32, 32), 0.01))  # confident, background everywhere
    unsure = _probs(np.full((32, 32), 0.5))
    assert prediction_entropy(unsure) == pytest.approx(np.log(2))
    assert prediction_entropy(collapsed) == pytest.approx(prediction_entropy(diverse), abs=1e-6)  # entropy cannot tell them apart
    assert information_maximization(diverse) > 0.6 > 0.01 > information_maximization(collapsed)
    assert information_maximization(unsure) == pytest.approx(0.0, abs=1e-12)


def test_batch_nuclear_norm_is_one_for_balanced_one_hot_and_lower_when_collapsed():
    half = np.zeros((16, 16))
    half[:, :8] = 1
    assert batch_nuclear_norm(_probs(half)) == pytest.approx(1.0)
    assert batch_nuclear_norm(_probs(np.zeros((16, 16)))) == pytest.approx(1 / np.sqrt(2))


def test_soft_neighbourhood_density_prefers_clustered_features():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16))
    clustered = np.repeat(centres, 50, axis=0) + 0.01 * rng.normal(size=(200, 16))
    scattered = rng.normal(size=(200, 16))
    assert soft_neighborhood_density(clustered) > soft_neighborhood_density(scattered) + 1.0


def test_dev_equals_iwcv_for_constant_weights_and_has_lower_variance():
    rng = np.random.default_rng(2)
    losses = rng.random(500)
    assert dev_risk(losses, np.ones(500)) == pytest.approx(iwcv_risk(losses, np.ones(500))) == pytest.approx(losses.mean())
    iwcv, dev = [], []
    for seed in range(200):  # weights correlated with the losses: the control variate removes their noise
        r = np.random.default_rng(seed)
        w = r.exponential(size=100)
        loss = 0.5 + 0.1 * r.random(100)
        iwcv.append(iwcv_risk(loss, w))
        dev.append(dev_risk(loss, w))
    assert np.mean(dev) == pytest.approx(0.55, abs=0.01) and np.std(dev) < 0.2 * np.std(iwcv)
    np.testing.assert_allclose(importance_weights(np.array([0.5, 0.8]), 100, 50), [2.0, 8.0])


def test_domain_classifier_weights_reweight_the_source_to_the_target():
    """Identical domains: weights about 1, so DEV is the plain source loss; a shifted target: the
    weighted source mean moves to the target's (a Gaussian shift has a logistic density ratio)."""
    rng = np.random.default_rng(3)
    source = rng.normal(size=(2000, 2))
    same = domain_probability(source, rng.normal(size=(2000, 2)))
    weights = importance_weights(same, 2000, 2000)
    assert np.abs(weights - 1).mean() < 0.1
    losses = rng.random(2000)
    assert dev_risk(losses, weights) == pytest.approx(losses.mean(), abs=0.01)
    target = rng.normal(size=(2000, 2)) + [0.5, 0.0]
    weights = importance_weights(domain_probability(source, target), 2000, 2000)
    reweighted = (weights[:, None] * source).sum(0) / weights.sum()
    assert reweighted[0] == pytest.approx(0.5, abs=0.08) and abs(reweighted[1]) < 0.08
    with pytest.raises(ValueError, match="same channels"):
        domain_probability(source, target[:, :1])


def test_tile_features_and_losses_per_window():
    torch.manual_seed(0)
    network = UNet(2, channels=(4, 8, 16)).eval()
    tiles = np.random.default_rng(4).normal(size=(5, 1, 32, 32)).astype(np.float32)
    labels = np.zeros((5, 1, 32, 32), np.uint8)
    features, losses = tile_features_and_losses(network, tiles, labels, batch_size=2)
    assert features.shape == (5, 16) and losses.shape == (5,) and np.all(losses > 0)
    with torch.no_grad():
        logits = network(torch.from_numpy(tiles[:1]))
    assert losses[0] == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.zeros(1, 32, 32, dtype=torch.long)).item(), rel=1e-5)
    assert tile_features_and_losses(network, tiles)[1] is None


def test_agreement_scores_single_out_the_outlier():
    rng = np.random.default_rng(3)
    truth = rng.random((20, 20)) > 0.7
    near = [np.clip(truth + 0.1 * rng.normal(size=truth.shape), 0, 1) for _ in range(3)]
    candidates = {"a": near[0], "b": near[1], "c": near[2], "outlier": np.ones_like(near[0]) * 0.9}
    scores = consensus_agreement(candidates)
    assert min(scores["a"], scores["b"], scores["c"]) > 0.9 > 0.5 > scores["outlier"]
    assert augmentation_agreement(truth, [truth, np.fliplr(np.fliplr(truth))]) == 1.0
    assert augmentation_agreement(truth, [~truth]) == 0.0
    with pytest.raises(ValueError, match="at least two"):
        consensus_agreement({"a": near[0]})


def test_balanced_agreement_does_not_reward_an_empty_or_full_mask():
    truth = np.random.default_rng(4).random((20, 20)) > 0.7
    empty, full = np.zeros_like(truth), np.ones_like(truth)
    assert augmentation_agreement(empty, [empty]) == 1.0 and augmentation_agreement(full, [full]) == 1.0  # plain Dice rewards both
    assert balanced_agreement(empty, empty) == 0.5 and balanced_agreement(full, full) == 0.5
    assert balanced_agreement(truth, truth) == 1.0 and balanced_agreement(truth, ~truth) == 0.0


def test_label_shift_estimates_recover_a_known_target_foreground_fraction():
    # source: 10 % foreground; the classifier finds 80 % of it and marks 5 % of the background
    c = np.array([[0.9 * 0.95, 0.1 * 0.2], [0.9 * 0.05, 0.1 * 0.8]])
    truth = np.zeros(10_000, bool)
    truth[:1000] = True
    predicted = truth.copy()
    predicted[800:1000] = False
    predicted[1000:1450] = True
    np.testing.assert_allclose(confusion_rates(predicted, truth), c)
    target_fraction = 0.3  # same p(x | y), 30 % foreground: predicted share = 0.3 * 0.8 + 0.7 * 0.05
    assert bbse_foreground_fraction(c, 0.3 * 0.8 + 0.7 * 0.05) == pytest.approx(target_fraction)
    # calibrated posteriors on the source prior, labels drawn at the target prior
    rng = np.random.default_rng(4)
    labels = rng.random(20_000) < target_fraction
    scores = np.where(labels, rng.normal(1.0, 1.0, labels.size), rng.normal(-1.0, 1.0, labels.size))
    likelihood_ratio = np.exp(2 * scores)  # N(1,1) / N(-1,1)
    source_prior = 0.1
    posterior = likelihood_ratio * source_prior / (likelihood_ratio * source_prior + 1 - source_prior)
    assert mlls_foreground_fraction(posterior, source_prior) == pytest.approx(labels.mean(), abs=0.02)
    with pytest.raises(ValueError, match="singular"):
        bbse_foreground_fraction(np.array([[0.5, 0.5], [0.0, 0.0]]), 0.2)
