"""Intensity alignment between microscopes: histogram matching to a target reference volume."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from custom.data.readers import read_volume


class HistogramMatchd(MapTransform):
    """Match the grey-value histogram of each image to a reference (target-domain) volume.

    The reference is read once, lazily, from ``reference``; matching uses
    ``skimage.exposure.match_histograms`` over the whole volume. An empty ``reference`` disables
    the transform, so configs can keep it in place as an option (Franco-Barranco et al. show this
    simple alignment is a strong first step between EM domains).
    """

    def __init__(self, keys: KeysCollection, reference: str | os.PathLike | None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference = reference
        self._reference_values: np.ndarray | None = None

    def _reference(self) -> np.ndarray:
        if self._reference_values is None:
            values, _ = read_volume(self.reference)
            self._reference_values = np.asarray(values)
        return self._reference_values

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if not self.reference:
            return d
        from skimage.exposure import match_histograms

        for key in self.key_iterator(d):
            image = d[key]
            reference = self._reference().astype(np.float32)
            matched = np.stack([match_histograms(c, reference) for c in np.asarray(image, dtype=np.float32)])
            d[key] = image.new_tensor(matched) if isinstance(image, torch.Tensor) else matched
        return d
