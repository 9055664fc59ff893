"""Networks: a feature-exposing U-Net (and, built on it, the adaptation architectures)."""

from .unet import UNet, UNetDecoder

__all__ = ["UNet", "UNetDecoder"]
