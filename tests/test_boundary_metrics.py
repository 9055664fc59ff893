"""ISBI 2012 membrane scores: cells from a boundary map, V_rand and V_info on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from custom.metrics import isbi_scores, segment_from_boundaries


def _grid_cells() -> tuple[np.ndarray, np.ndarray]:
    """Four 9x9 cells separated by 1-pixel membranes: (boundary map, ground-truth labels with 0 on membranes)."""
    boundary = np.zeros((19, 19), np.float32)
    boundary[9, :] = boundary[:, 9] = 1.0
    truth = np.zeros((19, 19), np.int32)
    truth[:9, :9], truth[:9, 10:], truth[10:, :9], truth[10:, 10:] = 1, 2, 3, 4
    return boundary, truth


def test_perfect_boundaries_score_one():
    boundary, truth = _grid_cells()
    cells = segment_from_boundaries(boundary)
    assert cells.min() > 0 and len(np.unique(cells)) == 4  # membranes given to the cells
    scores = isbi_scores(cells, truth)
    assert scores["v_rand"] == pytest.approx(1.0) and scores["v_info"] == pytest.approx(1.0)


def test_a_missing_membrane_merges_cells_and_lowers_both_scores():
    boundary, truth = _grid_cells()
    boundary[:9, 9] = 0.0  # the membrane between cells 1 and 2 is missed
    merged = isbi_scores(segment_from_boundaries(boundary), truth)
    split = truth.copy()
    split[:4, :9] = 5  # cell 1 cut in two
    oversegmented = isbi_scores(split, truth)
    for scores in (merged, oversegmented):
        assert 0.3 < scores["v_rand"] < 1.0 and 0.3 < scores["v_info"] < 1.0
    everything_one = isbi_scores(np.ones_like(truth), truth)
    assert everything_one["v_info"] == 0.0


def test_stacks_are_segmented_per_section_with_unique_ids():
    boundary, truth = _grid_cells()
    cells = segment_from_boundaries(np.stack([boundary, boundary]))
    assert len(np.unique(cells[0])) == len(np.unique(cells[1])) == 4
    assert not set(np.unique(cells[0])) & set(np.unique(cells[1]))
    assert isbi_scores(cells, np.stack([truth, truth + 4 * (truth > 0)]))["v_rand"] == pytest.approx(1.0)
