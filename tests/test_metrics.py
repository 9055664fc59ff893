"""Metrics against hand-computed values and against MONAI's handlers used by evaluate.json."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from custom.metrics import binary_metrics, confusion_counts, error_breakdown


def test_hand_computed_example():
    pred = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    label = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    # tp=2, fp=2, fn=1, tn=3
    assert confusion_counts(pred, label) == {"tp": 2, "fp": 2, "fn": 1, "tn": 3}
    m = binary_metrics(pred, label)
    assert m["iou"] == pytest.approx(2 / 5)
    assert m["dice"] == pytest.approx(4 / 7)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)


def test_empty_prediction_and_label_is_perfect_and_shapes_must_match():
    assert binary_metrics(np.zeros(4), np.zeros(4)) == {"iou": 1.0, "dice": 1.0, "precision": 1.0, "recall": 1.0}
    with pytest.raises(ValueError, match="differs"):
        binary_metrics(np.zeros(4), np.zeros(5))


def test_agrees_with_monai_metrics_used_by_the_bundle():
    from monai.metrics import ConfusionMatrixMetric, DiceMetric, MeanIoU
    from monai.networks.utils import one_hot

    rng = np.random.default_rng(1)
    label = rng.random((1, 1, 4, 16, 16)) > 0.7
    pred = label ^ (rng.random(label.shape) > 0.9)
    ours = binary_metrics(pred, label)
    p, y = (one_hot(torch.as_tensor(a, dtype=torch.float32), 2) for a in (pred, label))
    assert MeanIoU(include_background=False)(p, y).item() == pytest.approx(ours["iou"], abs=1e-6)
    assert DiceMetric(include_background=False)(p, y).item() == pytest.approx(ours["dice"], abs=1e-6)
    cm = ConfusionMatrixMetric(include_background=False, metric_name=["precision", "recall"])
    cm(p, y)
    precision, recall = (v.item() for v in cm.aggregate())
    assert precision == pytest.approx(ours["precision"], abs=1e-6)
    assert recall == pytest.approx(ours["recall"], abs=1e-6)


def test_prediction_entropy_is_ln2_for_undecided_and_small_for_confident_networks():
    from custom.metrics import target_prediction_stats

    class Constant(torch.nn.Module):
        def __init__(self, margin: float) -> None:
            super().__init__()
            self.margin = margin

        def forward(self, x):
            return torch.cat([torch.zeros_like(x), torch.full_like(x, self.margin)], 1)

    batches = [torch.zeros(2, 1, 4, 4)]
    assert target_prediction_stats(Constant(0.0), batches)["entropy"] == pytest.approx(np.log(2))
    assert target_prediction_stats(Constant(8.0), batches)["entropy"] < 0.01
    assert target_prediction_stats(Constant(8.0), batches)["foreground"] == 1.0
    assert target_prediction_stats(Constant(-8.0), batches)["foreground"] == 0.0


def test_error_breakdown_tells_boundary_errors_from_missed_and_false_objects():
    truth = np.zeros((2, 40, 40), bool)
    truth[:, 5:15, 5:15] = True  # found, drawn one pixel too wide
    truth[:, 25:35, 5:15] = True  # missed
    pred = np.zeros_like(truth)
    pred[:, 4:16, 4:16] = True
    pred[:, 30:33, 30:33] = True  # a false object far from any mitochondrion
    scores = error_breakdown(pred, truth, boundary_px=2)
    assert scores["fn_missed_objects"] == 1.0 and scores["fn_boundary"] == 0.0
    assert scores["fp_boundary"] == pytest.approx(44 / 53) and scores["fp_false_objects"] == pytest.approx(9 / 53)
    assert scores["missed_objects"] == 0.5 and scores["false_objects"] == 0.5
    assert scores["true_objects"] == 4 and scores["predicted_objects"] == 4
    eroded = np.zeros_like(truth)
    eroded[:, 6:14, 6:14] = True
    eroded[:, 26:34, 6:14] = True
    thin = error_breakdown(eroded, truth, boundary_px=1)
    assert thin["fn_boundary"] == 1.0 and thin["missed_objects"] == 0.0 and thin["fp_other"] == 0.0


def test_error_breakdown_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="differs from ground-truth shape"):
        error_breakdown(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))


def test_metrics_json_writes_an_undefined_ratio_as_zero_and_names_it(tmp_path):
    """#33 item 10: precision with nothing predicted was written as null."""
    import json
    from types import SimpleNamespace

    from custom.handlers.metrics_writer import MetricsJSONWriter

    engine = SimpleNamespace(state=SimpleNamespace(metrics={"iou": 0.0, "precision": float("nan"), "recall": torch.tensor([0.0, 0.0])}))
    MetricsJSONWriter(str(tmp_path / "metrics.json"), extra={"split": "target_test"})(engine)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == {"metrics": {"iou": 0.0, "precision": 0.0, "recall": 0.0}, "undefined_as_zero": ["precision"], "split": "target_test"}
