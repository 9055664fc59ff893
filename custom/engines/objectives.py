"""Adaptation objectives: the plug-ins that turn the DA trainer into MMD, CORAL, DANN, Y-Net, ...

Each objective is an ``nn.Module`` (its own parameters — domain classifiers, a reconstruction
decoder, a source stream — are optimised with the network) that receives the source and target
``DomainBatch`` of one iteration and returns named, already weighted loss terms. Adding a method
means adding an objective here (or composing existing ones) and a small override config; the
trainer does not change.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from ignite.engine import Engine
from monai.transforms import Randomizable
from monai.utils import convert_to_tensor
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.loss import _Loss

from custom.inference.predictor import WindowNetwork
from custom.losses import CORALLoss, DomainAdversarialLoss, MMDLoss, class_samples, dann_schedule, labels_at
from custom.networks import DomainClassifier, TwoStreamUNet, UNet, YNet, batch_norms

IN_PLANE_AXES = (-2, -1)  # the last two spatial axes (Y, X) of a 2D or 3D batch


class DomainBatch:
    """One domain's images with their encoder features and logits, each computed once when first asked for.

    Pass ``features`` when they are already computed, or an ``encoder`` to compute them on demand
    (an objective that never reads them, e.g. one that feeds the network its own view of the images,
    then costs no encoder pass). ``labels`` are the batch's segmentation labels where the domain has
    them (the source), as the loader gives them: (B, 1, *spatial) class indices or (B, K, *spatial) one-hot.
    ``logits`` may be given when already computed (a joint forward of both domains).
    """

    def __init__(
        self,
        images: torch.Tensor,
        features: list[torch.Tensor] | None = None,
        decoder: Callable[[list[torch.Tensor]], torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        encoder: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
        logits: torch.Tensor | None = None,
    ) -> None:
        if features is None and encoder is None:
            raise ValueError("a DomainBatch needs its encoder features or an encoder to compute them.")
        self.images = images
        self.labels = labels
        self._features = features
        self._encoder = encoder
        self._decoder = decoder
        self._logits: torch.Tensor | None = logits

    @property
    def features(self) -> list[torch.Tensor]:
        """Encoder features of ``images``, one tensor per level (encoded once when first asked for)."""
        if self._features is None:
            self._features = self._encoder(self.images)
        return self._features

    @property
    def logits(self) -> torch.Tensor:
        """Segmentation logits, decoded once when first asked for."""
        if self._logits is None:
            if self._decoder is None:
                raise RuntimeError("this DomainBatch has no decoder to compute logits.")
            self._logits = self._decoder(self.features)
        return self._logits


def check_level_weights(weights: Sequence[float], n_levels: int, name: str) -> tuple[float, ...]:
    """Validate per-level weights λ_i: one non-negative number per encoder level."""
    weights = tuple(float(w) for w in weights)
    if len(weights) != n_levels:
        raise ValueError(f"{name}: expected {n_levels} level weights (one per encoder level), got {list(weights)}.")
    if any(w < 0 for w in weights):
        raise ValueError(f"{name}: level weights must be >= 0, got {list(weights)}.")
    return weights


def check_weight(weight: float, name: str) -> float:
    """Validate a loss weight λ: a non-negative number."""
    if float(weight) < 0:
        raise ValueError(f"{name}: weight must be >= 0, got {weight}.")
    return float(weight)


class AdaptationObjective(nn.Module):
    """Base class: no extra loss. Subclasses override ``forward`` and, where needed, the hooks."""

    def source_network(self, network: nn.Module) -> nn.Module:
        """The network that processes source images (the shared one, except for two-stream)."""
        return network

    def iteration_started(self, engine: Engine) -> None:
        """Called before each iteration (e.g. to update a schedule from ``engine.state``)."""

    def iteration_completed(self, engine: Engine) -> None:
        """Called after the optimiser step (e.g. to update a teacher network)."""

    def training_completed(self, engine: Engine) -> None:
        """Called once training ends, before the trainer's handlers save the final model."""

    def forward(self, network: nn.Module, source: DomainBatch, target: DomainBatch) -> dict[str, torch.Tensor]:
        return {}


class FeatureAlignment(AdaptationObjective):
    """Σ_i λ_i · discrepancy(source features_i, target features_i) over encoder levels (MMD, CORAL, ...)."""

    def __init__(self, discrepancy: _Loss, level_weights: Sequence[float], name: str | None = None) -> None:
        super().__init__()
        self.discrepancy = discrepancy
        self.level_weights = tuple(level_weights)
        check_level_weights(self.level_weights, len(self.level_weights), type(discrepancy).__name__)
        self.name = name or type(discrepancy).__name__.replace("Loss", "").lower()

    def forward(self, network: nn.Module, source: DomainBatch, target: DomainBatch) -> dict[str, torch.Tensor]:
        check_level_weights(self.level_weights, len(source.features), self.name)
        return {
            f"{self.name}_l{i}": w * self.discrepancy(fs, ft)
            for i, (w, fs, ft) in enumerate(zip(self.level_weights, source.features, target.features))
            if w > 0
        }


def mmd_alignment(level_weights: Sequence[float], **mmd_args) -> FeatureAlignment:
    """Feature alignment with multi-kernel MMD (Roels et al. 2019)."""
    return FeatureAlignment(MMDLoss(**mmd_args), level_weights, "mmd")


def coral_alignment(level_weights: Sequence[float], **coral_args) -> FeatureAlignment:
    """Feature alignment with CORAL (Roels et al. 2019)."""
    return FeatureAlignment(CORALLoss(**coral_args), level_weights, "coral")


def class_map(labels: torch.Tensor) -> torch.Tensor:
    """(B, 1, *spatial) class indices or (B, K, *spatial) one-hot labels -> (B, *spatial) long."""
    return labels[:, 0].long() if labels.shape[1] == 1 else labels.argmax(1)


class ClassConditionalAlignment(FeatureAlignment):
    """Σ_i λ_i · mean_c discrepancy(source features_i of class c, target features_i of class c).

    Aligns each class's features separately, in the spirit of class-aware MMD (Kang et al. 2019,
    CAN), instead of the whole feature distribution: when the domains' class balance differs (e.g.
    4.6 % vs 9.7 % mitochondria), matching the whole mixture pushes target pixels of the rarer-in-source
    class to the other class. Source classes come from the labels, target classes from the network's
    own predictions (detached), kept only where the softmax confidence is ≥ ``confidence``. A class
    with fewer than ``min_samples`` locations in either domain at a level is skipped there (the term
    is absent when no class qualifies). Meant to start from a source-trained model, whose target
    predictions are already informative.
    """

    def __init__(
        self,
        discrepancy: _Loss,
        level_weights: Sequence[float],
        confidence: float = 0.9,
        min_samples: int = 16,
        max_samples: int = 512,
        name: str | None = None,
    ) -> None:
        super().__init__(discrepancy, level_weights, name or "class_" + type(discrepancy).__name__.replace("Loss", "").lower())
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"class-conditional alignment: confidence must be in [0, 1], got {confidence}.")
        self.confidence, self.min_samples, self.max_samples = float(confidence), int(min_samples), int(max_samples)

    @torch.no_grad()
    def target_classes(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, *spatial) predicted classes of the target, -1 where the prediction is not confident."""
        confidence, classes = torch.softmax(logits.float(), 1).max(1)
        return classes.masked_fill(confidence < self.confidence, -1)

    def forward(self, network: nn.Module, source: DomainBatch, target: DomainBatch) -> dict[str, torch.Tensor]:
        if source.labels is None:
            raise ValueError(f"{self.name}: the source DomainBatch carries no labels to split its features by class.")
        check_level_weights(self.level_weights, len(source.features), self.name)
        source_classes, target_classes = class_map(source.labels), self.target_classes(target.logits)
        terms = {}
        for i, (w, fs, ft) in enumerate(zip(self.level_weights, source.features, target.features)):
            if w == 0:
                continue
            at_source, at_target = labels_at(source_classes, fs.shape[2:]), labels_at(target_classes, ft.shape[2:])
            per_class = []
            for c in range(target.logits.shape[1]):
                xs = class_samples(fs, at_source, c, self.max_samples)
                xt = class_samples(ft, at_target, c, self.max_samples)
                if min(xs.shape[0], xt.shape[0]) >= self.min_samples:
                    per_class.append(self.discrepancy(xs, xt))
            if per_class:
                terms[f"{self.name}_l{i}"] = w * torch.stack(per_class).mean()
        return terms


def class_mmd_alignment(level_weights: Sequence[float], confidence: float = 0.9, **mmd_args) -> ClassConditionalAlignment:
    """Class-conditional feature alignment with multi-kernel MMD."""
    return ClassConditionalAlignment(MMDLoss(**mmd_args), level_weights, confidence, name="class_mmd")


class DomainAdversarial(AdaptationObjective):
    """DANN: a domain classifier behind gradient reversal on each weighted encoder level.

    The reversal scale follows Ganin's ramp ``grl_max · dann_schedule(progress)`` unless
    ``schedule`` is False (then it stays ``grl_max``).
    """

    def __init__(
        self, network: UNet, level_weights: Sequence[float], hidden: int = 64, grl_max: float = 1.0, schedule: bool = True
    ) -> None:
        super().__init__()
        self.level_weights = check_level_weights(level_weights, len(network.channels), "dann")
        self.grl_max, self.schedule = grl_max, schedule
        self.classifiers = nn.ModuleDict(
            {
                str(i): DomainClassifier(network.spatial_dims, c, hidden, grl_scale=0.0 if schedule else grl_max)
                for i, (c, w) in enumerate(zip(network.channels, self.level_weights))
                if w > 0
            }
        )
        self.loss = DomainAdversarialLoss()

    def iteration_started(self, engine: Engine) -> None:
        if self.schedule:
            total = engine.state.max_epochs * (engine.state.epoch_length or 1)
            scale = self.grl_max * dann_schedule((engine.state.iteration - 1) / max(1, total))
            for classifier in self.classifiers.values():
                classifier.grl.scale = scale

    def forward(self, network: nn.Module, source: DomainBatch, target: DomainBatch) -> dict[str, torch.Tensor]:
        terms = {}
        for key, classifier in self.classifiers.items():
            i = int(key)
            terms[f"dann_l{i}"] = self.level_weights[i] * self.loss(classifier(source.features[i]), classifier(target.features[i]))
        return terms


class Reconstruction(AdaptationObjective):
    """Y-Net: λ_rec · MSE of reconstructing source and target images through the bottleneck."""

    def __init__(self, network: UNet, weight: float = 1.0, source_weight: float = 1.0) -> None:
        super().__init__()
        self.ynet = YNet(network)
        self.weight = check_weight(weight, "reconstruction")
        self.source_weight = check_weight(source_weight, "reconstruction source")

    def forward(self, network: nn.Module, source: DomainBatch, target: DomainBatch) -> dict[str, torch.Tensor]:
        terms = {"recon_target": self.weight * F.mse_loss(self.ynet.reconstruct(target.features), target.images)}
        if self.source_weight > 0:
            recon = self.ynet.reconstruct(source.features)
            terms["recon_source"] = self.weight * self.source_weight * F.mse_loss(recon, source.images)
        return terms


class TwoStream(AdaptationObjective):
    """Two-stream U-Net: source images go through a source encoder tied to the target network's encoder,
    and both streams share the target network's decoder.

    Adds λ_w · weight regulariser and, optionally, a feature discrepancy between the streams' encoder
    features (``alignment``, e.g. ``mmd_alignment``), as in Bermúdez-Chacón et al. 2018. The target
    batch is also decoded in training mode, so the deployed decoder's batch-norm statistics are
    estimated on target features too (without it the deployed network never decoded a target image
    in training, and a decoder of its own would never have been normalised at all).
    """

    def __init__(self, network: UNet, weight: float = 1.0, alignment: FeatureAlignment | None = None) -> None:
        super().__init__()
        self.streams = TwoStreamUNet(network)
        self.weight = check_weight(weight, "two_stream")
        self.alignment = alignment

    def source_network(self, network: nn.Module) -> nn.Module:
        return self.streams.source

    def forward(self, network: nn.Module, source: DomainBatch, target: DomainBatch) -> dict[str, torch.Tensor]:
        terms = {"weight_tying": self.weight * self.streams.weight_regularizer()}
        if self.alignment is not None:
            terms.update(self.alignment(network, source, target))
        if network.training:
            target.logits  # noqa: B018 - the forward pass updates the shared decoder's batch-norm statistics
        return terms


class MeanTeacher(AdaptationObjective):
    """Self-training on the target: an EMA teacher's confident predictions supervise the student.

    The teacher starts as a copy of the network at the first iteration (so weights loaded from a
    pretrained checkpoint are used) and follows it by exponential moving average. Pixels whose
    teacher confidence (max softmax) is below ``confidence`` are ignored; ``mc_samples`` > 1 averages
    that many dropout-enabled teacher passes (MC dropout) before thresholding.

    ``student_transform`` (optional) gives the student its own view of each target image: a
    channel-first array transform applied per sample (e.g. a MONAI ``Compose`` of intensity
    perturbations; it must not move pixels, the pseudo-labels come from the unperturbed image), so the
    student learns to predict under a strong perturbation what the teacher predicts on the clean
    image (the weak/strong consistency of FixMatch and torch-em's mean teacher). Its random state is
    seeded from torch's generator at the first iteration, so a seeded run repeats.

    ``teacher_batch_stats``: the teacher normalises each target batch with that batch's own
    batch-norm statistics (AdaBN on the fly; its running statistics are left as they are) instead of
    the running statistics, which during training average source and target batches. The
    student's target pass does the same in training mode, so both see target-normalised features.

    ``class_balanced``: the pseudo-label loss is the mean over pseudo-classes of each class's mean
    cross-entropy (balanced cross-entropy, as in class-balanced self-training) instead of the mean
    over all kept pixels, so a rare class the teacher labels on few pixels keeps the weight of the
    majority class and cannot fade out of the pseudo-labels (the all-background collapse).

    ``teacher_tta``: the teacher's logits are averaged over the image and its flips along the two
    in-plane axes (test-time augmentation, as ``VolumePredictor``'s ``tta_flip_axes``) before the
    softmax, so a pseudo-label must hold under those flips to be confident.

    ``deploy_teacher``: when training ends the teacher's weights are copied into the network, so the
    final model (``model_final.pt``) is the EMA teacher, the model Mean Teacher reports (an average
    of the student's last ~1 / (1 - decay) iterations).

    The teacher is part of this module's ``state_dict`` (as extra state), so a training checkpoint
    that saves the objective resumes with the teacher it had instead of a fresh copy of the student.
    """

    def __init__(
        self,
        weight: float = 1.0,
        decay: float = 0.99,
        confidence: float = 0.9,
        mc_samples: int = 1,
        student_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        teacher_batch_stats: bool = False,
        class_balanced: bool = False,
        teacher_tta: bool = False,
        deploy_teacher: bool = False,
    ) -> None:
        super().__init__()
        self.weight = check_weight(weight, "mean_teacher")
        self.decay, self.confidence, self.mc_samples = decay, confidence, max(1, mc_samples)
        self.student_transform = student_transform
        self.teacher_batch_stats = teacher_batch_stats
        self.class_balanced = class_balanced
        self.teacher_tta = teacher_tta
        self.deploy_teacher = deploy_teacher
        self._teacher: list[nn.Module] = []  # a list keeps the teacher out of parameters() (the optimiser's)
        self._restored: dict[str, torch.Tensor] | None = None  # teacher weights from a checkpoint, until the teacher exists

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        """The teacher's weights (empty before the first iteration), saved with this module's state_dict."""
        if self._teacher:
            return {k: v.detach().clone() for k, v in self._teacher[0].state_dict().items()}
        return dict(self._restored or {})

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the teacher from a checkpoint: now if it exists, else when it is created."""
        if not state:
            return
        if self._teacher:
            self._teacher[0].load_state_dict(state)
        else:
            self._restored = dict(state)

    def _teacher_for(self, network: nn.Module) -> nn.Module:
        if not self._teacher:
            teacher = copy.deepcopy(network)
            for p in teacher.parameters():
                p.requires_grad_(False)
            if self.teacher_batch_stats:
                for m in batch_norms(teacher):
                    m.momentum = 0.0  # normalising with batch statistics leaves the running ones unchanged
            if self._restored is not None:
                teacher.load_state_dict(self._restored)
                self._restored = None
            self._teacher.append(teacher)
            if isinstance(self.student_transform, Randomizable):
                self.student_transform.set_random_state(seed=int(torch.randint(2**31 - 1, (1,))))
        return self._teacher[0]

    @torch.no_grad()
    def pseudo_labels(self, network: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hard labels, confidence mask) from the teacher on ``images``."""
        teacher = self._teacher_for(network)
        teacher.eval()
        if self.mc_samples > 1:
            for m in teacher.modules():
                if isinstance(m, nn.Dropout | nn.Dropout2d | nn.Dropout3d):
                    m.train()
        if self.teacher_batch_stats:
            for m in batch_norms(teacher):
                m.train()  # normalise with the target batch's own statistics
        predict = WindowNetwork(teacher, images.ndim - 2, channels_last=False, flip_axes=IN_PLANE_AXES) if self.teacher_tta else teacher
        probs = torch.stack([torch.softmax(predict(images), 1) for _ in range(self.mc_samples)]).mean(0)
        confidence, labels = probs.max(1)
        return labels, confidence >= self.confidence

    @torch.no_grad()
    def student_view(self, images: torch.Tensor) -> torch.Tensor:
        """``student_transform`` applied to each image of the batch (shape kept; checked)."""
        view = torch.stack([convert_to_tensor(self.student_transform(image), track_meta=False) for image in images])
        if view.shape != images.shape:
            raise ValueError(f"student_transform changed the image shape {tuple(images.shape)} -> {tuple(view.shape)}; it must only change intensities.")
        return view.to(images.device, images.dtype)

    def forward(self, network: nn.Module, source: DomainBatch, target: DomainBatch) -> dict[str, torch.Tensor]:
        labels, keep = self.pseudo_labels(network, target.images)
        logits = target.logits if self.student_transform is None else network(self.student_view(target.images))
        per_pixel = F.cross_entropy(logits, labels, reduction="none")
        if self.class_balanced and keep.any():
            loss = torch.stack([per_pixel[keep & (labels == c)].mean() for c in labels[keep].unique()]).mean()
        else:  # with nothing kept this is 0 and keeps the graph
            loss = (per_pixel * keep).sum() / keep.sum().clamp(min=1)
        return {"self_training": self.weight * loss}

    @torch.no_grad()
    def iteration_completed(self, engine: Engine) -> None:
        teacher = self._teacher_for(engine.network)
        for t, s in zip(teacher.state_dict().values(), engine.network.state_dict().values()):
            if t.dtype.is_floating_point:
                t.mul_(self.decay).add_(s.detach(), alpha=1 - self.decay)
            else:
                t.copy_(s)

    @torch.no_grad()
    def training_completed(self, engine: Engine) -> None:
        if self.deploy_teacher and self._teacher:
            engine.network.load_state_dict(self._teacher[0].state_dict())


class Composite(AdaptationObjective):
    """Several objectives at once (e.g. CORAL alignment plus mean-teacher self-training)."""

    def __init__(self, objectives: Sequence[AdaptationObjective]) -> None:
        super().__init__()
        self.objectives = nn.ModuleList(objectives)

    def source_network(self, network: nn.Module) -> nn.Module:
        for objective in self.objectives:
            network = objective.source_network(network)
        return network

    def iteration_started(self, engine: Engine) -> None:
        for objective in self.objectives:
            objective.iteration_started(engine)

    def iteration_completed(self, engine: Engine) -> None:
        for objective in self.objectives:
            objective.iteration_completed(engine)

    def training_completed(self, engine: Engine) -> None:
        for objective in self.objectives:
            objective.training_completed(engine)

    def forward(self, network: nn.Module, source: DomainBatch, target: DomainBatch) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for objective in self.objectives:
            terms.update(objective(network, source, target))
        return terms
