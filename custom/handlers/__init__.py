"""Ignite handlers: resumable checkpoints, AdaBN, data-parallel synchronisation, result writers."""

from .adabn import AdaBNHandler, adapt_batchnorm
from .checkpoint import AtomicCheckpointSaver, TrainingCheckpoint, latest_checkpoint
from .distributed import DataParallelSync, DiscardingWriter, for_this_rank
from .metrics_writer import MetricsJSONWriter, OverlaySaver

__all__ = ["AdaBNHandler", "AtomicCheckpointSaver", "DataParallelSync", "DiscardingWriter", "MetricsJSONWriter", "OverlaySaver", "TrainingCheckpoint", "adapt_batchnorm", "for_this_rank", "latest_checkpoint"]
