"""Instance metrics on hand-built label images with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from custom.metrics import instance_metrics, iou_matrix


def _squares(*boxes: tuple[int, int, int, int], shape=(40, 40)) -> np.ndarray:
    out = np.zeros(shape, np.int32)
    for i, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        out[y0:y1, x0:x1] = i
    return out


def test_identical_labels_score_one_whatever_the_ids():
    truth = _squares((0, 10, 0, 10), (20, 30, 20, 30))
    pred = np.where(truth == 1, 7, np.where(truth == 2, 3, 0))  # other ids, same objects
    m = instance_metrics(pred, truth)
    assert m["ap"] == m["ap50"] == m["ap70"] == m["f1_70"] == 1.0
    assert (m["splits"], m["merges"], m["n_true"], m["n_pred"]) == (0, 0, 2, 2)


def test_shifted_object_iou_two_thirds_counts_below_0_7_only():
    truth = _squares((0, 10, 0, 10))
    pred = _squares((0, 10, 2, 12))  # intersection 80, union 120
    np.testing.assert_allclose(iou_matrix(pred, truth), [[80 / 120]])
    m = instance_metrics(pred, truth)
    assert m["ap50"] == 1.0 and m["ap70"] == 0.0
    assert m["ap"] == pytest.approx(0.4)  # matched at 0.5, 0.55, 0.6, 0.65 of the ten thresholds
    assert m["precision70"] == m["recall70"] == 0.0


def test_split_and_merge_are_counted():
    truth = _squares((0, 10, 0, 10), (20, 30, 0, 10), (20, 30, 20, 30))
    pred = np.zeros_like(truth)
    pred[0:10, 0:5], pred[0:10, 5:10] = 1, 2  # object 1 split in two halves (IoU 0.5 each)
    pred[20:30, 0:30] = 3  # objects 2 and 3 merged
    m = instance_metrics(pred, truth)
    assert (m["splits"], m["merges"]) == (1, 1)
    # at IoU 0.5: one half matches object 1 (TP), the other half and the merged blob are FPs, objects 2, 3 FNs
    assert m["ap50"] == pytest.approx(1 / (1 + 2 + 2))


def test_empty_cases_and_3d():
    empty = np.zeros((4, 8, 8), np.int32)
    one = empty.copy()
    one[1:3, 2:6, 2:6] = 5
    assert instance_metrics(empty, empty)["ap"] == 1.0
    assert instance_metrics(empty, one)["ap"] == 0.0 and instance_metrics(one, empty)["ap"] == 0.0
    assert instance_metrics(one, one)["ap70"] == 1.0
    with pytest.raises(ValueError, match="differs"):
        instance_metrics(one, one[:, :4])
