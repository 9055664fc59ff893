"""Instances from a foreground map: seeded watershed on a predicted distance map, or connected components.

The network predicts, besides foreground, each object's normalised distance transform (1 at its
centre, 0 at its edge) and a blurred border map (``instance_targets`` makes both from instance
labels for training). ``watershed_instances`` seeds one marker per distance-map maximum that lies
in the foreground and off the borders, then floods the inverted distance map inside the
foreground, so touching objects separate where connected components would merge them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import label as connected_label
from skimage.morphology import h_maxima
from skimage.segmentation import find_boundaries, watershed


def instance_targets(instances: np.ndarray, border_sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(distance, border) float32 maps from an instance label image (2D or 3D, 0 = background).

    ``distance``: Euclidean distance to the object's edge divided by the object's maximum, so every
    object peaks at 1. ``border``: the objects' inner boundaries blurred by a Gaussian of
    ``border_sigma`` pixels and rescaled to a maximum of 1.
    """
    instances = np.asarray(instances)
    distance = np.zeros(instances.shape, np.float32)
    for index, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        padded = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        inside = instances[padded] == index
        edt = ndimage.distance_transform_edt(inside)
        distance[padded][inside] = (edt[inside] / edt.max()).astype(np.float32)
    border = ndimage.gaussian_filter(find_boundaries(instances, mode="inner").astype(np.float32), border_sigma)
    if border.max() > 0:
        border /= border.max()
    return distance, border


def remove_small_labels(labels: np.ndarray, min_size: int) -> np.ndarray:
    """``labels`` with every label of fewer than ``min_size`` pixels set to 0 (ids kept). Unlike
    ``skimage.morphology.remove_small_objects``, whose positional threshold removes sizes up to and
    *including* it from scikit-image 0.26 on, the rule is the same on every supported version."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels).astype(labels.dtype)


def connected_component_instances(foreground: np.ndarray, threshold: float = 0.5, min_size: int = 0) -> np.ndarray:
    """Baseline: connected components of ``foreground > threshold`` (full connectivity), small ones removed."""
    labels = connected_label(np.asarray(foreground) > threshold, connectivity=np.asarray(foreground).ndim)
    return remove_small_labels(labels, min_size) if min_size else labels


def watershed_instances(
    foreground: np.ndarray,
    distance: np.ndarray,
    border: np.ndarray | None = None,
    threshold: float = 0.5,
    seed_threshold: float = 0.5,
    border_threshold: float = 0.5,
    h: float = 0.1,
    min_size: int = 0,
) -> np.ndarray:
    """Seeded watershed: one marker per regional maximum of the distance map that rises ``h`` above
    its surroundings (a plateau is one marker), reaches ``seed_threshold``, lies in the foreground
    and not on a border above ``border_threshold``; -distance is flooded inside
    ``foreground > threshold``. A foreground component that holds no such marker (a weak distance
    map) becomes one instance, so the watershed only ever splits what connected components find.
    Returns int32 instance labels (0 = background)."""
    foreground, distance = np.asarray(foreground), np.asarray(distance)
    if foreground.shape != distance.shape or (border is not None and np.shape(border) != foreground.shape):
        raise ValueError(f"foreground {foreground.shape}, distance {distance.shape} and border {np.shape(border)} must have one shape.")
    mask = foreground > threshold
    allowed = mask & (distance >= seed_threshold)
    if border is not None:
        allowed &= np.asarray(border) < border_threshold
    maxima = h_maxima(np.where(mask, distance, 0).astype(np.float32), h).astype(bool) & allowed
    markers = connected_label(maxima, connectivity=mask.ndim)
    components = connected_label(mask, connectivity=mask.ndim)
    seeded = np.zeros(components.max() + 1, bool)
    seeded[components[markers > 0]] = True
    unseeded = mask & ~seeded[components]
    markers[unseeded] = components[unseeded] + markers.max()
    labels = watershed(-distance, markers, mask=mask).astype(np.int32)
    return remove_small_labels(labels, min_size) if min_size else labels
