"""Where a binary mask's errors lie: at object boundaries, in missed objects, or in false objects.

IoU says how much is wrong, not what. A domain shift that blurs or shifts boundaries calls for
other remedies than one that makes the model overlook a kind of object (e.g. mitochondria much
smaller than the source's). Objects are connected components of each (Y, X) section, as annotators draw
them in anisotropic EM stacks; distances are in pixels of the section.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _sections(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be a (Y, X) section or a (Z, Y, X) stack of binary masks, got shape {array.shape}.")
    return (array[None] if array.ndim == 2 else array) > 0


def _coverage(objects: np.ndarray, n: int, other: np.ndarray) -> np.ndarray:
    """Per object id 1..n: the fraction of its pixels that ``other`` marks (index 0 = background)."""
    area = np.bincount(objects.ravel(), minlength=n + 1)
    covered = np.bincount(objects.ravel(), weights=other.ravel(), minlength=n + 1)
    return covered / np.maximum(area, 1)


def section_object_areas(mask: np.ndarray) -> np.ndarray:
    """Areas (pixels) of the objects of a binary (Y, X) section or (Z, Y, X) stack, section by section."""
    areas = [np.bincount(objects.ravel())[1:] for objects, _ in map(ndimage.label, _sections(mask, "mask"))]
    return np.concatenate(areas) if areas else np.zeros(0, np.int64)


def error_breakdown(pred: np.ndarray, truth: np.ndarray, boundary_px: float = 4.0, missed_coverage: float = 0.2) -> dict[str, float]:
    """Shares of the false negatives and false positives by kind, and the missed / false object rates.

    - ``fn_missed_objects``: share of false-negative pixels inside true objects that the prediction
      covers less than ``missed_coverage``; ``fn_boundary``: inside other true objects, within
      ``boundary_px`` of their border; ``fn_interior``: the rest.
    - ``fp_false_objects``: share of false-positive pixels in predicted objects that overlap the truth
      less than ``missed_coverage``; ``fp_boundary``: others within ``boundary_px`` outside a true
      object; ``fp_other``: the rest.
    - ``missed_objects`` / ``false_objects``: fraction of true / predicted objects of those kinds,
      with the object counts ``true_objects`` / ``predicted_objects``.
    """
    pred, truth = _sections(pred, "prediction"), _sections(truth, "ground truth")
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {truth.shape}.")
    fn_kind, fp_kind = np.zeros(3), np.zeros(3)  # missed/false objects, boundary, rest
    missed = false = n_true = n_pred = 0
    for p, t in zip(pred, truth):
        true_objects, nt = ndimage.label(t)
        pred_objects, npred = ndimage.label(p)
        is_missed = _coverage(true_objects, nt, p) < missed_coverage  # per true object id (0: background)
        is_false = _coverage(pred_objects, npred, t) < missed_coverage
        in_missed, in_false = is_missed[true_objects] & t, is_false[pred_objects] & p
        near_inside = ndimage.distance_transform_edt(t) <= boundary_px
        near_outside = ndimage.distance_transform_edt(~t) <= boundary_px
        fn, fp = t & ~p, p & ~t
        fn_kind += [(fn & in_missed).sum(), (fn & ~in_missed & near_inside).sum(), (fn & ~in_missed & ~near_inside).sum()]
        fp_kind += [(fp & in_false).sum(), (fp & ~in_false & near_outside).sum(), (fp & ~in_false & ~near_outside).sum()]
        missed, false = missed + int(is_missed[1:].sum()), false + int(is_false[1:].sum())
        n_true, n_pred = n_true + nt, n_pred + npred
    fn_share = fn_kind / max(fn_kind.sum(), 1)
    fp_share = fp_kind / max(fp_kind.sum(), 1)
    return {
        "fn_missed_objects": float(fn_share[0]),
        "fn_boundary": float(fn_share[1]),
        "fn_interior": float(fn_share[2]),
        "fp_false_objects": float(fp_share[0]),
        "fp_boundary": float(fp_share[1]),
        "fp_other": float(fp_share[2]),
        "missed_objects": missed / max(n_true, 1),
        "false_objects": false / max(n_pred, 1),
        "true_objects": float(n_true),
        "predicted_objects": float(n_pred),
    }
