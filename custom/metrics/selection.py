"""Label-free model selection on the target domain: monitoring during training (entropy, foreground share) and
scores of candidate models (IM, BNM, SND, IWCV/DEV, agreement, label-shift estimates of the foreground fraction)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn

from .segmentation import binary_metrics, confusion_counts


@torch.no_grad()
def target_prediction_stats(network: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu") -> dict[str, float]:
    """Label-free summaries of ``softmax(network(x))`` over target batches, per pixel.

    ``entropy``: mean entropy (nats; lower = more confident). ``foreground``: fraction of pixels
    whose most likely class is not class 0; self-training that unlearns the object class shows
    as this fraction falling towards 0 while the entropy falls too.
    """
    was_training = network.training
    network.eval()
    entropy, foreground, count = 0.0, 0.0, 0
    for images in batches:
        probs = torch.softmax(network(images.to(device)), dim=1)
        entropy += float(-(probs * torch.log(probs.clamp(min=1e-8))).sum(1).sum())
        foreground += float((probs.argmax(1) > 0).sum())
        count += probs[:, 0].numel()
    network.train(was_training)
    if count == 0:
        raise ValueError("no target batch to compute prediction statistics on.")
    return {"entropy": entropy / count, "foreground": foreground / count}


class TargetEntropyHandler:
    """After every evaluation, store the target prediction entropy and predicted foreground fraction
    in ``engine.state.metrics`` (as ``name`` and ``foreground_name``).

    Attach to the validation evaluator: both are logged next to the source-validation metrics
    (and to TensorBoard by its stats handler), without ever reading target labels.
    """

    def __init__(self, network: nn.Module, loader: Iterable, name: str = "target_entropy", foreground_name: str = "target_foreground") -> None:
        self.network, self.loader, self.name, self.foreground_name = network, loader, name, foreground_name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        stats = target_prediction_stats(self.network, (batch["image"] for batch in self.loader), engine.state.device)
        engine.state.metrics[self.name] = stats["entropy"]
        engine.state.metrics[self.foreground_name] = stats["foreground"]


# -- label-free scores of a candidate model on an unlabelled target ---------------------------------
# Each takes arrays a candidate produced (softmax probabilities (N, C, ...), features, masks) rather
# than a network, so the same numbers can be computed from saved predictions. "Higher is better"
# unless a docstring says otherwise.


def _as_rows(probs: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, C, *spatial) probabilities as a (pixels, C) float64 matrix."""
    array = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    if array.ndim < 2:
        raise ValueError(f"expected probabilities of shape (N, C, ...), got {array.shape}.")
    return np.moveaxis(array, 1, -1).reshape(-1, array.shape[1])


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis)


def prediction_entropy(probs: np.ndarray | torch.Tensor) -> float:
    """Mean per-pixel entropy (nats) of the class probabilities; *lower* = more confident.

    The plain confidence score (e.g. Morerio et al. 2018 for model selection): it also rewards a
    model that confidently predicts one class everywhere, which ``information_maximization`` does not.
    """
    return float(_entropy(_as_rows(probs)).mean())


def information_maximization(probs: np.ndarray | torch.Tensor) -> float:
    """IM = H(mean prediction) − mean H(prediction): confident per pixel *and* diverse over pixels.

    Information maximisation (Krause et al. 2010; as a UDA objective in SHOT, Liang et al. 2020).
    A model that collapses onto the background scores about 0 even when it is confident.
    """
    rows = _as_rows(probs)
    return float(_entropy(rows.mean(0)) - _entropy(rows).mean())


def batch_nuclear_norm(probs: np.ndarray | torch.Tensor, max_rows: int = 4096, seed: int = 0) -> float:
    """BNM: nuclear norm of the (pixels × classes) prediction matrix (Cui et al. 2020), scaled to [0, 1].

    Large when predictions are confident and spread over the classes: 1 for one-hot predictions split
    evenly over the C classes, 1/sqrt(C) when every pixel gets the same class. ``max_rows`` pixels are sampled.
    """
    rows = _as_rows(probs)
    if len(rows) > max_rows:
        rows = rows[np.random.default_rng(seed).choice(len(rows), max_rows, replace=False)]
    return float(np.linalg.svd(rows, compute_uv=False).sum() / np.sqrt(len(rows) * min(rows.shape)))


def soft_neighborhood_density(features: np.ndarray | torch.Tensor, temperature: float = 0.05, max_rows: int = 2048, seed: int = 0) -> float:
    """SND (Saito et al. 2021): mean entropy of each sample's softmax over its cosine similarities to
    the other samples; high when target samples lie in dense neighbourhoods (clusters), as a
    well-adapted model's features or probabilities do.

    ``features``: (N, D) rows, or (N, C, *spatial) maps whose pixels are the rows; ``max_rows`` sampled.
    """
    array = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    rows = array if array.ndim == 2 else _as_rows(array)
    if len(rows) > max_rows:
        rows = rows[np.random.default_rng(seed).choice(len(rows), max_rows, replace=False)]
    rows = rows / np.clip(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12, None)
    logits = rows @ rows.T / temperature
    np.fill_diagonal(logits, -np.inf)
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return float(_entropy(p).mean())


def importance_weights(target_probability: np.ndarray, n_source: int, n_target: int) -> np.ndarray:
    """Density ratios p_target(x) / p_source(x) of source samples from a domain classifier's
    P(target | x) (Sugiyama et al. 2007): (P / (1 − P)) · n_source / n_target."""
    p = np.clip(np.asarray(target_probability, dtype=np.float64), 1e-6, 1 - 1e-6)
    return p / (1 - p) * n_source / n_target


def domain_probability(source: np.ndarray, target: np.ndarray, l2: float = 1.0, folds: int = 2, seed: int = 0) -> np.ndarray:
    """P(target | x) of each source sample from an L2-regularised logistic-regression domain classifier
    on standardised features, cross-fitted (You et al. 2019 fit it on held-out features): each source
    sample is scored by the classifier fitted on the other ``folds`` of both domains. ``l2``: the
    penalty on the summed log-loss (scikit-learn's 1 / C)."""
    from scipy.optimize import minimize

    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(f"features must be (samples, channels) with the same channels, got {source.shape} and {target.shape}.")
    if min(len(source), len(target)) < folds:
        raise ValueError(f"need at least {folds} samples per domain, got {len(source)} and {len(target)}.")
    rng = np.random.default_rng(seed)
    source_fold, target_fold = rng.permutation(len(source)) % folds, rng.permutation(len(target)) % folds
    probability = np.empty(len(source))
    for k in range(folds):
        x = np.concatenate([source[source_fold != k], target[target_fold != k]])
        y = np.concatenate([np.zeros((source_fold != k).sum()), np.ones((target_fold != k).sum())])
        mean, std = x.mean(0), x.std(0) + 1e-8
        design = np.c_[(x - mean) / std, np.ones(len(x))]

        def loss(w: np.ndarray, design: np.ndarray = design, y: np.ndarray = y) -> tuple[float, np.ndarray]:
            z = design @ w
            penalty = np.r_[w[:-1], 0.0]  # the intercept is not penalised
            value = np.sum(np.logaddexp(0, z) - y * z) + 0.5 * l2 * penalty @ penalty
            return float(value), design.T @ (1 / (1 + np.exp(-z)) - y) + l2 * penalty

        w = minimize(loss, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B").x
        held = np.c_[(source[source_fold == k] - mean) / std, np.ones((source_fold == k).sum())]
        probability[source_fold == k] = 1 / (1 + np.exp(-(held @ w)))
    return probability


def iwcv_risk(source_losses: np.ndarray, weights: np.ndarray) -> float:
    """IWCV (Sugiyama et al. 2007): the mean importance-weighted source-validation loss; *lower* is better."""
    return float(np.mean(np.asarray(weights, np.float64) * np.asarray(source_losses, np.float64)))


def dev_risk(source_losses: np.ndarray, weights: np.ndarray) -> float:
    """DEV (You et al. 2019): IWCV with the density ratio as a control variate, mean(w·l) + η·mean(w) − η
    with η = −Cov(w·l, w) / Var(w); lower variance than IWCV, same expectation. *Lower* is better."""
    w, loss = np.asarray(weights, np.float64), np.asarray(source_losses, np.float64)
    weighted = w * loss
    var = w.var(ddof=1) if len(w) > 1 else 0.0
    eta = -np.cov(weighted, w, ddof=1)[0, 1] / var if var > 0 else 0.0
    return float(weighted.mean() + eta * w.mean() - eta)


@torch.no_grad()
def tile_features_and_losses(
    network: nn.Module, tiles: np.ndarray, labels: np.ndarray | None = None, device: torch.device | str = "cpu", batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per tile, the bottleneck features of ``network.encode`` (a U-Net of ``custom.networks``) averaged
    over space, and given ``labels`` the mean pixel cross-entropy of its logits: DEV's per-sample
    features and losses. ``tiles`` (N, 1, Y, X) for a 2D network or (N, 1, Z, Y, X) for 3D, normalised
    as at inference; the network runs as it is (eval mode for a deployed model)."""
    features, losses = [], []
    for start in range(0, len(tiles), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(tiles[start : start + batch_size], dtype=np.float32)).to(device)
        encoded = network.encode(x)
        features.append(encoded[-1].flatten(2).mean(2).cpu())
        if labels is not None:
            y = torch.from_numpy(np.ascontiguousarray(labels[start : start + batch_size][:, 0], dtype=np.int64)).to(device)
            loss = nn.functional.cross_entropy(network.decode(encoded), y, reduction="none")
            losses.append(loss.flatten(1).mean(1).cpu())
    return torch.cat(features).double().numpy(), torch.cat(losses).double().numpy() if labels is not None else None


def dice_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Dice between two binary masks (1.0 when both are empty; ``binary_metrics``' rule)."""
    return binary_metrics(a, b)["dice"]


def balanced_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of the foreground and the background Dice of two binary masks, a class absent from both
    counting 0: an empty or a full mask, which agrees with any transform of itself, scores at most 0.5."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)

    def dice(x: np.ndarray, y: np.ndarray) -> float:
        total = int(x.sum()) + int(y.sum())
        return 2.0 * int((x & y).sum()) / total if total else 0.0

    return (dice(a, b) + dice(~a, ~b)) / 2


def augmentation_agreement(mask: np.ndarray, augmented_masks: Iterable[np.ndarray]) -> float:
    """Mean Dice between a model's mask and its masks of augmented inputs mapped back (flips, rot90,
    intensity perturbations; or another checkpoint of the same run): stability under changes that
    should not change the answer (as in test-time-augmentation consistency scores)."""
    scores = [dice_agreement(mask, other) for other in augmented_masks]
    if not scores:
        raise ValueError("no augmented mask to compare with.")
    return float(np.mean(scores))


def consensus_agreement(probabilities: dict[str, np.ndarray], threshold: float = 0.5) -> dict[str, float]:
    """Each candidate's Dice against the mean foreground probability of all *other* candidates,
    thresholded: agreement with the consensus of the alternatives (needs at least two candidates)."""
    if len(probabilities) < 2:
        raise ValueError("consensus agreement needs at least two candidates.")
    stacked = {name: np.asarray(p, np.float64) for name, p in probabilities.items()}
    total = sum(stacked.values())
    n = len(stacked)
    return {name: dice_agreement(p > threshold, (total - p) / (n - 1) > threshold) for name, p in stacked.items()}


def confusion_rates(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """2 × 2 joint rates C[i, j] = P(prediction = i, label = j) of binary masks on labelled (source-validation) data."""
    c = confusion_counts(predicted, truth)
    return np.array([[c["tn"], c["fn"]], [c["fp"], c["tp"]]], dtype=np.float64) / sum(c.values())


def bbse_foreground_fraction(source_confusion: np.ndarray, target_predicted_fraction: float) -> float:
    """Target foreground fraction estimated by black-box shift estimation (BBSE, Lipton et al. 2018).

    Solves C w = μ, C the source-validation joint rates (``confusion_rates``) and μ the target's
    predicted class fractions, for the class weights w; the target's foreground fraction is
    w_fg · P_source(fg). Assumes label shift (p(x | y) unchanged); clipped to [0, 1].
    """
    c = np.asarray(source_confusion, np.float64)
    mu = np.array([1 - target_predicted_fraction, target_predicted_fraction])
    if abs(np.linalg.det(c)) < 1e-12:
        raise ValueError("the source confusion matrix is singular: the model does not separate the classes on the source.")
    w = np.linalg.solve(c, mu)
    return float(np.clip(max(w[1], 0.0) * c[:, 1].sum(), 0.0, 1.0))


def mlls_foreground_fraction(target_probabilities: np.ndarray, source_foreground_fraction: float, iterations: int = 100, tol: float = 1e-8) -> float:
    """Target foreground fraction by maximum-likelihood label-shift estimation (EM; Saerens et al. 2002).

    Re-weights the (calibrated) foreground probabilities ``target_probabilities`` by the ratio of the
    current target prior to the source prior ``source_foreground_fraction`` until the prior is the
    mean re-weighted posterior.
    """
    p = np.clip(np.asarray(target_probabilities, np.float64).ravel(), 1e-12, 1 - 1e-12)
    prior_source = np.clip(source_foreground_fraction, 1e-6, 1 - 1e-6)
    prior = prior_source
    for _ in range(iterations):
        fg = p * prior / prior_source
        bg = (1 - p) * (1 - prior) / (1 - prior_source)
        new = float(np.mean(fg / (fg + bg)))
        if abs(new - prior) < tol:
            return new
        prior = new
    return float(prior)
