"""Training engines: the domain-adaptation trainer and its adaptation objectives."""

from .objectives import (
    AdaptationObjective,
    ClassConditionalAlignment,
    Composite,
    DomainAdversarial,
    DomainBatch,
    FeatureAlignment,
    MeanTeacher,
    Reconstruction,
    TwoStream,
    class_mmd_alignment,
    coral_alignment,
    mmd_alignment,
)
from .record import NetworkRecord, read_network_record, recorded
from .trainer import DomainAdaptationTrainer, loss_terms
from .utils import load_pretrained, trainable_parameters

__all__ = [
    "AdaptationObjective",
    "ClassConditionalAlignment",
    "Composite",
    "DomainAdaptationTrainer",
    "DomainAdversarial",
    "DomainBatch",
    "FeatureAlignment",
    "MeanTeacher",
    "NetworkRecord",
    "Reconstruction",
    "TwoStream",
    "class_mmd_alignment",
    "coral_alignment",
    "load_pretrained",
    "loss_terms",
    "mmd_alignment",
    "read_network_record",
    "recorded",
    "trainable_parameters",
]
