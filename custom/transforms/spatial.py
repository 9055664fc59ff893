"""Resampling EM volumes to a common in-plane pixel size (resolution matching between microscopes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monai.config import KeysCollection
from monai.transforms import MapTransform, Spacingd

from custom.data.readers import EMDataError


class ResampleToPixelSized(Spacingd):
    """``Spacingd`` to ``pixel_size_nm`` in y and x, keeping the section spacing (z) as it is.

    Channel-first (C, Z, Y, X) data with the reader's spacing affine. Refuses data whose spacing is
    unknown (``spacing_known`` False in the metadata), since resampling would then be arbitrary.
    ``pixel_size_nm`` <= 0 disables resampling. Invertible like ``Spacingd`` (for ``Invertd``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        pixel_size_nm: float,
        mode: Sequence[str] | str = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        self.pixel_size_nm = float(pixel_size_nm)
        super().__init__(keys, pixdim=(0.0, self.pixel_size_nm, self.pixel_size_nm), mode=mode, allow_missing_keys=allow_missing_keys)

    def __call__(self, data: Mapping, lazy: bool | None = None) -> dict:
        if self.pixel_size_nm <= 0:
            return dict(data)
        for key in self.key_iterator(dict(data)):
            meta = getattr(data[key], "meta", {})
            if meta.get("spacing_known") is False:
                raise EMDataError(
                    f"{meta.get('filename_or_obj', key)}: spacing unknown, cannot resample to {self.pixel_size_nm} nm; "
                    "pass the image's spacing in nm (bundle runs: --input_spacing_nm \"[z, y, x]\"; readers: spacing=(z, y, x)) "
                    "or set pixel_size_nm to 0 to segment it unresampled."
                )
        return super().__call__(data, lazy=lazy)


class CropFractiond(MapTransform):
    """Keep the part of each (C, Z, Y, X) array between fractions ``start`` and ``stop`` of the x axis.

    Used to give semi-supervised runs only the first ``stop`` of the target training region's labels
    (10 %, 50 %, 100 %). ``stop`` must lie in (0, 1].
    """

    def __init__(self, keys: KeysCollection, start: float = 0.0, stop: float = 1.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= start < stop <= 1.0:
            raise ValueError(f"label fraction must satisfy 0 <= start < stop <= 1, got start={start}, stop={stop}.")
        self.start, self.stop = start, stop

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            width = d[key].shape[-1]
            lo, hi = int(round(self.start * width)), max(int(round(self.stop * width)), int(round(self.start * width)) + 1)
            d[key] = d[key][..., lo:hi]
        return d


def uses_target_labels(fraction: float) -> bool:
    """Whether a run gets target labels: ``fraction`` of the target training region, checked to lie in [0, 1]."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"target_label_fraction must lie in [0, 1] (0 = no target labels), got {fraction}.")
    return float(fraction) > 0
