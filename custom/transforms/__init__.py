"""EM-specific MONAI transforms (and instance-segmentation targets / post-processing)."""

from .instances import InstanceTargetsd, InstancesFromMapsd
from .intensity import HistogramMatchd
from .loading import LoadEMVolumed
from .spatial import CropFractiond, ResampleToPixelSized, uses_target_labels
from .validation import ValidateVolumed

__all__ = [
    "CropFractiond",
    "HistogramMatchd",
    "InstanceTargetsd",
    "LoadEMVolumed",
    "ResampleToPixelSized",
    "ValidateVolumed",
    "InstancesFromMapsd",
    "uses_target_labels",
]
