"""Networks: a feature-exposing U-Net and the adaptation architectures built on it."""

from .anisotropy import anisotropic_layout, training_spacing
from .domain_classifier import DomainClassifier
from .norms import DomainStatistics, batch_norms
from .two_stream import TwoStreamUNet
from .unet import UNet, UNetDecoder, check_window_size, network_downsampling
from .ynet import YNet, reconstruction_decoder_like

__all__ = ["DomainClassifier", "anisotropic_layout", "training_spacing", "batch_norms", "DomainStatistics", "TwoStreamUNet", "UNet", "UNetDecoder", "check_window_size", "network_downsampling", "YNet", "reconstruction_decoder_like"]
