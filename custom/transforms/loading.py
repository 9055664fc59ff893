"""Loading EM volumes in bundle pipelines with the project's reader alone, so its errors reach the user."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import LoadImaged

from custom.data.readers import EMVolumeReader


class LoadEMVolumed(LoadImaged):
    """``LoadImaged`` that reads with ``reader`` (an ``EMVolumeReader``) only.

    MONAI's ``LoadImage`` catches a designated reader's error and falls back to its other readers,
    so a truncated TIFF surfaces as a later, unrelated complaint ("expected one grey channel ...").
    Here the reader is passed at call time, which MONAI uses without fallback: the ``EMDataError``
    naming the file and what was expected is what the user sees. Same arguments as ``LoadImaged``.
    """

    def __init__(self, keys: KeysCollection, reader: ImageReader | None = None, **kwargs) -> None:
        self.em_reader = reader if reader is not None else EMVolumeReader()
        super().__init__(keys, reader=self.em_reader, **kwargs)

    def __call__(self, data: Mapping[Hashable, object], reader: ImageReader | None = None) -> dict:
        return super().__call__(data, reader or self.em_reader)
