"""EM-specific MONAI transforms."""

from .spatial import ResampleToPixelSized
from .validation import ValidateVolumed

__all__ = ["ResampleToPixelSized", "ValidateVolumed"]
