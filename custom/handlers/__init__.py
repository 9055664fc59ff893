"""Ignite handlers: resumable checkpoints, AdaBN and TENT, data-parallel synchronisation, result writers."""

from .adabn import AdaBNHandler, adapt_batchnorm
from .adapted import save_adapted_model
from .checkpoint import SNAPSHOT_PREFIX, AtomicCheckpointSaver, TrainingCheckpoint, latest_checkpoint, snapshot_checkpoint, snapshot_epoch
from .epoch_seed import EpochSeeding, epoch_seed
from .distributed import DataParallelSync, DiscardingWriter, for_this_rank
from .metrics_writer import MetricsJSONWriter, OverlaySaver
from .model_loader import ModelLoader
from .tent import TENTHandler, minimize_entropy, prediction_entropy

__all__ = ["SNAPSHOT_PREFIX", "AdaBNHandler", "AtomicCheckpointSaver", "DataParallelSync", "DiscardingWriter", "EpochSeeding", "MetricsJSONWriter", "ModelLoader", "OverlaySaver", "TENTHandler", "TrainingCheckpoint", "adapt_batchnorm", "epoch_seed", "for_this_rank", "latest_checkpoint", "minimize_entropy", "prediction_entropy", "save_adapted_model", "snapshot_checkpoint", "snapshot_epoch"]
