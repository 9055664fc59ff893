"""Sliding-window inference over EM volumes: whole volumes in the bundle, blockwise at scale, writers."""

from .blocks import Block, sliding_window_blocks
from .blockwise import segment_volume
from .inferers import AugmentedWindowInferer, make_volume_inferer
from .instances import label_instances
from .predictor import ResampledPredictor, VolumePredictor, WindowNetwork, resample_in_plane
from .savers import SaveInstancesd, SaveVolumePredictiond, affine_spacing, check_prediction_outputs, input_datalist, input_stem
from .scale_match import DEFAULT_FACTORS, match_target_pixel_size, source_reference_area
from .zarr_output import ZarrSegmentation

__all__ = [
    "AugmentedWindowInferer",
    "DEFAULT_FACTORS",
    "Block",
    "ResampledPredictor",
    "SaveInstancesd",
    "SaveVolumePredictiond",
    "VolumePredictor",
    "WindowNetwork",
    "ZarrSegmentation",
    "affine_spacing",
    "check_prediction_outputs",
    "input_datalist",
    "input_stem",
    "label_instances",
    "make_volume_inferer",
    "match_target_pixel_size",
    "resample_in_plane",
    "segment_volume",
    "sliding_window_blocks",
    "source_reference_area",
]
