"""EM-specific MONAI transforms (and instance-segmentation targets / post-processing)."""

from .instances import InstanceTargetsd, InstancesFromMapsd
from .intensity import HistogramMatchd
from .spatial import CropFractiond, ResampleToPixelSized, uses_target_labels
from .validation import ValidateVolumed

__all__ = [
    "CropFractiond",
    "HistogramMatchd",
    "InstanceTargetsd",
    "ResampleToPixelSized",
    "ValidateVolumed",
    "InstancesFromMapsd",
    "uses_target_labels",
]
