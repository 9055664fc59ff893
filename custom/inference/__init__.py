"""Sliding-window inference over whole EM volumes and writing its results."""

from .inferers import make_volume_inferer
from .savers import SaveVolumePredictiond, affine_spacing

__all__ = ["SaveVolumePredictiond", "affine_spacing", "make_volume_inferer"]
