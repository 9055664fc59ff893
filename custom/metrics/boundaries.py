"""ISBI 2012 scores for membrane (boundary) predictions: V_rand and V_info on the cells they imply.

A boundary map becomes a cell segmentation section by section: connected regions below the
threshold are seeds, and a watershed on the boundary map gives every pixel (membranes included) to
a cell. The scores follow Arganda-Carreras et al. 2015 (ISBI 2012 challenge), restricted to the
ground truth's foreground (cells, label > 0): V_rand is the Rand F-score (1 - scikit-image's
``adapted_rand_error``), V_info the F-score of I(S; T)/H(S) and I(S; T)/H(T). Both are 1 for a
perfect segmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from skimage.measure import label as connected_label
from skimage.metrics import adapted_rand_error
from skimage.segmentation import watershed

from .instances import overlap_matrix


def _label_sections(array: np.ndarray, label_section: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``label_section`` to each (Y, X) section of a 2D or 3D array; int32 ids unique over the stack."""
    stack = np.asarray(array)[None] if np.ndim(array) == 2 else np.asarray(array)
    out = np.zeros(stack.shape, np.int32)
    offset = 0
    for z, section in enumerate(stack):
        labels = label_section(section)
        out[z] = np.where(labels > 0, labels + offset, 0)
        offset += int(labels.max())
    return out[0] if np.ndim(array) == 2 else out


def segment_from_boundaries(boundary: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Cell labels (int32, ids unique over the stack) from a (Y, X) or (Z, Y, X) boundary probability."""
    return _label_sections(boundary, lambda section: watershed(section, connected_label(section < threshold, connectivity=1)))


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def isbi_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """V_rand and V_info of a cell segmentation against ground-truth cells (0 = membrane, ignored)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {truth.shape}.")
    error, _, _ = adapted_rand_error(truth, pred, ignore_labels=(0,))
    inside = truth > 0
    joint, _, _ = overlap_matrix(pred[inside] + 1, truth[inside])  # +1: a predicted 0 is a segment too
    h_joint, h_truth, h_pred = _entropy(joint.ravel()), _entropy(joint.sum(1)), _entropy(joint.sum(0))
    mutual = h_truth + h_pred - h_joint
    precision = mutual / h_pred if h_pred > 0 else 1.0
    recall = mutual / h_truth if h_truth > 0 else 1.0
    v_info = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"v_rand": float(1 - error), "v_info": float(v_info)}


def cells_from_membrane_mask(membrane: np.ndarray) -> np.ndarray:
    """Ground-truth cells of a binary membrane mask: 4-connected non-membrane regions per section (0 = membrane)."""
    return _label_sections(membrane, lambda section: connected_label(section == 0, connectivity=1))


class ISBIScores(Metric):
    """Ignite metric: mean V_rand and V_info over evaluated volumes, from membrane maps.

    Expects ``(pred, label)`` lists of channel-first tensors whose channel 1 holds the membrane
    probability (or one-hot prediction) and the binary membrane label. Results go into
    ``engine.state.metrics`` as ``v_rand`` and ``v_info``.
    """

    def __init__(self, threshold: float = 0.5, output_transform: Callable = lambda x: x) -> None:
        self.threshold = threshold
        super().__init__(output_transform=output_transform, metrics_result_mode="flatten")

    def reset(self) -> None:
        self._scores: list[dict[str, float]] = []

    def update(self, output: Sequence) -> None:
        preds, labels = output
        for pred, label in zip(preds, labels):
            boundary = np.asarray(pred[1].detach().cpu(), np.float32)
            truth = cells_from_membrane_mask(np.asarray(label[-1].detach().cpu()) > 0.5)
            self._scores.append(isbi_scores(segment_from_boundaries(boundary, self.threshold), truth))

    def compute(self) -> dict[str, float]:
        if not self._scores:
            raise NotComputableError("ISBIScores needs at least one evaluated volume.")
        return {key: float(np.mean([s[key] for s in self._scores])) for key in ("v_rand", "v_info")}
