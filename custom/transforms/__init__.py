"""EM-specific MONAI transforms."""

from .intensity import HistogramMatchd
from .spatial import CropFractiond, ResampleToPixelSized, uses_target_labels
from .validation import ValidateVolumed

__all__ = ["CropFractiond", "HistogramMatchd", "ResampleToPixelSized", "ValidateVolumed", "uses_target_labels"]
