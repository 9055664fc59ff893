"""Distance/border targets and seeded watershed vs connected components on touching objects."""

from __future__ import annotations

import numpy as np
import pytest

from custom.inference.watershed import connected_component_instances, instance_targets, watershed_instances
from custom.metrics import instance_metrics

from .conftest import touching_disks


def test_targets_peak_at_one_per_object_and_mark_borders():
    labels = touching_disks()
    distance, border = instance_targets(labels)
    for i in (1, 2):
        assert distance[labels == i].max() == pytest.approx(1.0)
    assert distance[labels == 0].max() == 0
    assert border.max() == pytest.approx(1.0) and border[24, 20] < 0.05  # centre far from any border
    assert border[24, 31] > 0.5  # where the disks touch


def test_watershed_separates_touching_objects_that_connected_components_merge():
    labels = touching_disks()
    distance, border = instance_targets(labels)
    foreground = (labels > 0).astype(np.float32)
    cc = connected_component_instances(foreground)
    ws = watershed_instances(foreground, distance, border)
    assert cc.max() == 1 and instance_metrics(cc, labels)["merges"] == 1
    assert ws.max() == 2
    assert instance_metrics(ws, labels)["ap70"] == 1.0


def test_watershed_works_in_3d_and_checks_shapes():
    labels = np.stack([touching_disks()] * 3)
    distance, border = instance_targets(labels)
    ws = watershed_instances((labels > 0).astype(np.float32), distance, border)
    assert ws.max() == 2
    with pytest.raises(ValueError, match="one shape"):
        watershed_instances(labels[0] > 0, distance)


def test_objects_without_a_strong_distance_peak_are_kept_whole():
    """A weak distance map (no seed reaches seed_threshold) must not drop objects: at worst the
    watershed equals connected components."""
    labels = touching_disks()
    distance, border = instance_targets(labels)
    foreground = (labels > 0).astype(np.float32)
    weak = watershed_instances(foreground, 0.3 * distance, border)
    np.testing.assert_array_equal(weak > 0, labels > 0)
    assert weak.max() == 1  # one unseeded component, kept as one instance
    mixed = distance.copy()
    mixed[labels == 2] *= 0.3  # object 2 has no seed, object 1 has one
    ws = watershed_instances(foreground, mixed, border)
    np.testing.assert_array_equal(ws > 0, labels > 0)
    assert ws.max() == 1  # the seed of object 1 floods the whole touching component
