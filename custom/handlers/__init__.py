"""Ignite handlers: resumable checkpoints and result writers."""

from .checkpoint import TrainingCheckpoint, latest_checkpoint
from .metrics_writer import MetricsJSONWriter, OverlaySaver

__all__ = ["MetricsJSONWriter", "OverlaySaver", "TrainingCheckpoint", "latest_checkpoint"]
