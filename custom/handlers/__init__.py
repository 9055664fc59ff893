"""Ignite handlers: resumable checkpoints, AdaBN, result writers."""

from .adabn import AdaBNHandler, adapt_batchnorm
from .checkpoint import TrainingCheckpoint, latest_checkpoint
from .metrics_writer import MetricsJSONWriter, OverlaySaver

__all__ = ["AdaBNHandler", "MetricsJSONWriter", "OverlaySaver", "TrainingCheckpoint", "adapt_batchnorm", "latest_checkpoint"]
