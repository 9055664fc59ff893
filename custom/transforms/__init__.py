"""EM-specific MONAI transforms."""

from .intensity import HistogramMatchd
from .spatial import CropFractiond, ResampleToPixelSized
from .validation import ValidateVolumed

__all__ = ["CropFractiond", "HistogramMatchd", "ResampleToPixelSized", "ValidateVolumed"]
