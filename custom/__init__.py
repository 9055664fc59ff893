"""Domain-adaptive segmentation of electron-microscopy volumes (MONAI bundles' shared code)."""

__version__ = "0.1.0"
