"""Sliding-window inference over EM volumes: whole volumes in the bundle, blockwise at scale, writers."""

from .blocks import Block, sliding_window_blocks
from .blockwise import segment_volume
from .inferers import AugmentedWindowInferer, make_volume_inferer
from .instances import label_instances
from .predictor import VolumePredictor, WindowNetwork
from .savers import SaveInstancesd, SaveVolumePredictiond, affine_spacing, input_stem
from .zarr_output import ZarrSegmentation

__all__ = [
    "AugmentedWindowInferer",
    "Block",
    "SaveInstancesd",
    "SaveVolumePredictiond",
    "VolumePredictor",
    "WindowNetwork",
    "ZarrSegmentation",
    "affine_spacing",
    "input_stem",
    "label_instances",
    "make_volume_inferer",
    "segment_volume",
    "sliding_window_blocks",
]
