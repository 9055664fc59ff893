"""Instance-segmentation metrics: IoU matching, AP over IoU thresholds, split and merge counts.

AP follows the 2018 Data Science Bowl: at a threshold t, predicted and true instances are matched
one-to-one (Hungarian matching on IoU, pairs with IoU >= t only) and AP(t) = TP / (TP + FP + FN);
the reported AP is the mean over t = 0.5, 0.55, ..., 0.95. Works on 2D and 3D label images
(0 = background, any positive integers as instance ids).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix

DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Consecutive ids 1..n for the positive labels of ``labels`` (0 stays background)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if ids[0] != 0:
        inverse = inverse + 1
    return inverse, int(np.count_nonzero(ids))


def overlap_matrix(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every (true, predicted) instance pair and each instance's size.

    Returns (intersections [n_true, n_pred], true sizes [n_true], predicted sizes [n_pred]).
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {truth.shape}.")
    p, n_pred = _relabel(np.asarray(pred))
    t, n_true = _relabel(np.asarray(truth))
    counts = coo_matrix((np.ones(p.size, np.int64), (t.ravel(), p.ravel())), shape=(n_true + 1, n_pred + 1)).toarray()
    return counts[1:, 1:], counts[1:, :].sum(1), counts[:, 1:].sum(0)


def _iou(inter: np.ndarray, true_size: np.ndarray, pred_size: np.ndarray) -> np.ndarray:
    union = true_size[:, None] + pred_size[None, :] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape, float), where=union > 0)


def iou_matrix(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every (true, predicted) instance pair, shape [n_true, n_pred]."""
    return _iou(*overlap_matrix(pred, truth))


def match_counts(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of a one-to-one matching with IoU >= ``threshold`` (Hungarian on IoU)."""
    n_true, n_pred = iou.shape
    if n_true == 0 or n_pred == 0:
        return 0, n_pred, n_true
    rows, cols = linear_sum_assignment(np.where(iou >= threshold, iou, 0.0), maximize=True)
    tp = int(np.count_nonzero(iou[rows, cols] >= threshold))
    return tp, n_pred - tp, n_true - tp


def split_merge_counts(pred: np.ndarray, truth: np.ndarray, coverage: float = 0.5) -> dict[str, int]:
    """Splits: true instances with >= 2 predicted instances each lying over ``coverage`` inside it.
    Merges: predicted instances that hold over ``coverage`` of each of >= 2 true instances."""
    return _split_merge(*overlap_matrix(pred, truth), coverage)


def _split_merge(inter: np.ndarray, true_size: np.ndarray, pred_size: np.ndarray, coverage: float = 0.5) -> dict[str, int]:
    pieces = (inter > coverage * pred_size[None, :]).sum(1)  # per true instance
    swallowed = (inter > coverage * true_size[:, None]).sum(0)  # per predicted instance
    return {"splits": int(np.count_nonzero(pieces >= 2)), "merges": int(np.count_nonzero(swallowed >= 2))}


def _score_names(at: float) -> tuple[str, ...]:
    a = round(at * 100)
    return ("ap", "ap50", f"ap{a}", f"precision{a}", f"recall{a}", f"f1_{a}")


def _scores(counts: Mapping[float, Sequence[int]], thresholds: Sequence[float], at: float) -> dict[str, float]:
    """AP (mean over ``thresholds``, at 0.5, at ``at``) and precision/recall/F1 at ``at`` from
    ``{threshold: (TP, FP, FN)}``."""

    def ap(t: float) -> float:
        tp, fp, fn = counts[t]
        return float(tp / (tp + fp + fn)) if tp + fp + fn else 1.0

    tp, fp, fn = counts[at]
    precision = float(tp / (tp + fp)) if tp + fp else 1.0
    recall = float(tp / (tp + fn)) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    values = (float(np.mean([ap(t) for t in thresholds])), ap(0.5), ap(at), precision, recall, f1)
    return dict(zip(_score_names(at), values))


def instance_metrics(pred: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] = DSB_THRESHOLDS, at: float = 0.7) -> dict[str, float]:
    """AP over ``thresholds`` (mean) and at 0.5 and ``at``, precision/recall/F1 at ``at``, splits and merges."""
    overlaps = overlap_matrix(pred, truth)  # one pass over the images for IoU, splits and merges
    iou = _iou(*overlaps)
    counts = {t: match_counts(iou, t) for t in {*thresholds, 0.5, at}}
    return {
        **_scores(counts, thresholds, at),
        "n_true": int(iou.shape[0]),
        "n_pred": int(iou.shape[1]),
        **_split_merge(*overlaps),
    }


class InstanceMetrics(Metric):
    """Ignite metric: ``instance_metrics`` pooled over the evaluated images.

    Expects ``(pred, label)`` lists of (1, *spatial) integer instance images. Match counts and
    split/merge counts are summed over images before AP, precision, recall and F1 are formed (the
    DSB 2018 score averages AP per image instead; pooled counts weigh crowded images more and are
    stable on images with few objects). Results go into ``engine.state.metrics`` flat: ``ap``
    (mean over ``thresholds``), ``ap50``, ``ap70``, ``precision70``, ``recall70``, ``f1_70``,
    ``splits``, ``merges`` (for ``at`` = 0.7). With ``only`` (one of those names) the metric is that
    single scalar, as a key metric for checkpoint selection needs.
    """

    def __init__(
        self, thresholds: Sequence[float] = DSB_THRESHOLDS, at: float = 0.7, only: str | None = None, output_transform: Callable = lambda x: x
    ) -> None:
        self.thresholds, self.at, self.only = tuple(thresholds), at, only
        names = (*_score_names(at), "splits", "merges")
        if only is not None and only not in names:
            raise ValueError(f"InstanceMetrics: unknown value {only!r}; choose from {names}.")
        super().__init__(output_transform=output_transform, metrics_result_mode="flatten")

    def reset(self) -> None:
        self._counts = {t: np.zeros(3, np.int64) for t in {*self.thresholds, 0.5, self.at}}
        self._split_merge = {"splits": 0, "merges": 0}
        self._images = 0

    def update(self, output: Sequence) -> None:
        for pred, label in zip(*output):
            pred, truth = (np.asarray(torch.as_tensor(x).detach().cpu())[0].astype(np.int64) for x in (pred, label))
            overlaps = overlap_matrix(pred, truth)
            iou = _iou(*overlaps)
            for t in self._counts:
                self._counts[t] += match_counts(iou, t)
            for key, value in _split_merge(*overlaps).items():
                self._split_merge[key] += value
            self._images += 1

    def compute(self) -> dict[str, float] | float:
        if not self._images:
            raise NotComputableError("InstanceMetrics needs at least one evaluated image.")
        values = {**_scores(self._counts, self.thresholds, self.at), **{k: float(v) for k, v in self._split_merge.items()}}
        return values if self.only is None else values[self.only]
