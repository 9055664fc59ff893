"""Checks that turn bad input into one clear error before it reaches a network."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform

from custom.data.readers import EMDataError


def _name(data: Mapping, key: Hashable) -> str:
    return str(getattr(data[key], "meta", {}).get("filename_or_obj", key))


class ValidateVolumed(MapTransform):
    """Check a loaded (C, Z, Y, X) image (and its label, when present) before training or inference.

    Errors name the file: wrong number of dimensions or channels, NaN/Inf values, a constant image,
    image/label shape mismatch, label values outside ``num_classes``, or an empty label.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str | None = "label",
        num_classes: int = 2,
        allow_empty_label: bool = False,
    ) -> None:
        super().__init__([image_key] + ([label_key] if label_key else []), allow_missing_keys=True)
        self.image_key, self.label_key = image_key, label_key
        self.num_classes = num_classes
        self.allow_empty_label = allow_empty_label

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        image = d[self.image_key]
        name = _name(d, self.image_key)
        if image.ndim != 4 or image.shape[0] != 1:
            raise EMDataError(f"{name}: expected one grey channel and (Z, Y, X), got tensor shape {tuple(image.shape)}.")
        values = torch.as_tensor(image)
        if values.is_floating_point() and not torch.isfinite(values).all():
            raise EMDataError(f"{name}: image holds NaN or Inf values; expected finite intensities.")
        if values.min() == values.max():
            raise EMDataError(f"{name}: image is constant ({float(values.min())}); expected EM intensities.")
        if self.label_key and self.label_key in d:
            label = d[self.label_key]
            label_name = _name(d, self.label_key)
            if tuple(label.shape) != tuple(image.shape):
                raise EMDataError(
                    f"{label_name}: label shape {tuple(label.shape)[1:]} differs from image {name} shape "
                    f"{tuple(image.shape)[1:]}; expected equal (Z, Y, X)."
                )
            unique = np.unique(np.asarray(label))
            if unique.min() < 0 or unique.max() >= self.num_classes:
                raise EMDataError(f"{label_name}: label values {unique[:10].tolist()} outside classes 0..{self.num_classes - 1}.")
            if not self.allow_empty_label and unique.max() == 0:
                raise EMDataError(f"{label_name}: the label volume is empty (no foreground); expected annotated objects.")
        return d
