"""Training targets and post-processing for instance segmentation (foreground, distance, border)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from custom.inference.watershed import connected_component_instances, instance_targets, watershed_instances


class InstanceTargetsd(MapTransform):
    """Replace (1, *spatial) instance labels by a (3, *spatial) float32 target: foreground, distance, border.

    ``distance`` is each object's normalised distance transform and ``border`` its blurred inner
    boundary (``custom.inference.watershed.instance_targets``).
    """

    def __init__(self, keys: KeysCollection, border_sigma: float = 1.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.border_sigma = border_sigma

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = np.asarray(d[key])
            if labels.shape[0] != 1:
                raise ValueError(f"{key}: expected one channel of instance labels, got shape {labels.shape}.")
            distance, border = instance_targets(labels[0].astype(np.int64), self.border_sigma)
            target = np.stack([(labels[0] > 0).astype(np.float32), distance, border])
            d[key] = torch.as_tensor(target)
        return d


class InstancesFromMapsd(MapTransform):
    """(3, *spatial) logits (foreground, distance, border) → (1, *spatial) int32 instances.

    ``method`` "watershed": seeded watershed on the distance map, seeds off the border
    (``watershed_instances``); "connected_components": the baseline, components of the foreground
    alone (``connected_component_instances``). ``min_size`` removes smaller objects (pixels).
    """

    METHODS = ("watershed", "connected_components")

    def __init__(
        self,
        keys: KeysCollection,
        method: str = "watershed",
        threshold: float = 0.5,
        seed_threshold: float = 0.5,
        border_threshold: float = 0.5,
        min_size: int = 0,
    ) -> None:
        super().__init__(keys)
        if method not in self.METHODS:
            raise ValueError(f"unknown instance method {method!r}; choose from {self.METHODS}.")
        self.method, self.threshold, self.min_size = method, threshold, min_size
        self.seed_threshold, self.border_threshold = seed_threshold, border_threshold

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            logits = d[key]
            maps = torch.sigmoid(torch.as_tensor(logits).float()).cpu().numpy()
            if maps.shape[0] != 3:
                raise ValueError(f"{key}: expected 3 channels (foreground, distance, border), got shape {maps.shape}.")
            if self.method == "watershed":
                instances = watershed_instances(
                    maps[0], maps[1], maps[2], self.threshold, self.seed_threshold, self.border_threshold, min_size=self.min_size
                )
            else:
                instances = connected_component_instances(maps[0], self.threshold, self.min_size)
            out = torch.as_tensor(instances.astype(np.int32)[None])
            d[key] = MetaTensor(out, meta=logits.meta) if isinstance(logits, MetaTensor) else out
        return d
