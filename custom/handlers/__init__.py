"""Ignite handlers: resumable checkpoints, AdaBN and TENT, data-parallel synchronisation, result writers."""

from .adabn import AdaBNHandler, adapt_batchnorm
from .checkpoint import AtomicCheckpointSaver, TrainingCheckpoint, latest_checkpoint
from .distributed import DataParallelSync, DiscardingWriter, for_this_rank
from .metrics_writer import MetricsJSONWriter, OverlaySaver
from .tent import TENTHandler, minimize_entropy, prediction_entropy

__all__ = ["AdaBNHandler", "AtomicCheckpointSaver", "DataParallelSync", "DiscardingWriter", "MetricsJSONWriter", "OverlaySaver", "TENTHandler", "TrainingCheckpoint", "adapt_batchnorm", "for_this_rank", "latest_checkpoint", "minimize_entropy", "prediction_entropy"]
