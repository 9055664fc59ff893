"""The DA trainer and its objectives, on tiny in-memory loaders."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.losses import DiceCELoss
from monai.transforms import RandGaussianNoise, SpatialPad

from custom.engines import (
    DomainAdaptationTrainer,
    DomainBatch,
    DomainAdversarial,
    MeanTeacher,
    Reconstruction,
    TwoStream,
    class_mmd_alignment,
    coral_alignment,
    mmd_alignment,
    trainable_parameters,
)
from custom.handlers import TrainingCheckpoint
from custom.networks import UNet, YNet


def _batches(n: int, seed: int, labelled: bool = True) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        batch = {"image": torch.randn(2, 1, 16, 16, generator=g)}
        if labelled:
            batch["label"] = (torch.rand(2, 1, 16, 16, generator=g) > 0.7).float()
        out.append(batch)
    return out


def _trainer(network, adaptation=None, target=None, epochs=2, handlers=(), source=None, labelled=None, **options):
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(trainable_parameters(network, adaptation), lr=1e-3)
    return DomainAdaptationTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=source or _batches(3, 0),
        network=network,
        optimizer=optimizer,
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
        target_data_loader=target,
        target_labelled_loader=labelled,
        adaptation=adaptation,
        train_handlers=list(handlers),
        decollate=False,
        **options,
    )


def _net() -> UNet:
    torch.manual_seed(1)
    return UNet(2, channels=(4, 8, 16))


def test_trainer_draws_one_target_batch_per_iteration_and_cycles():
    target = _batches(2, 5, labelled=False)
    trainer = _trainer(_net(), coral_alignment([0.0, 1.0, 1.0]), target, epochs=2)
    trainer.run()
    assert trainer.state.iteration == 6
    assert trainer.target_batches_drawn == 6  # a 2-batch target loader cycled three times
    assert {"loss_seg", "loss_coral_l1", "loss_coral_l2"} <= set(trainer.state.output)


def test_zero_weights_equal_the_source_only_baseline():
    baseline, adapted = _net(), _net()
    _trainer(baseline).run()
    _trainer(adapted, mmd_alignment([0.0, 0.0, 0.0]), _batches(3, 5, labelled=False)).run()
    for p, q in zip(baseline.parameters(), adapted.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_adaptation_without_target_loader_is_refused():
    with pytest.raises(ValueError, match="target_data_loader"):
        _trainer(_net(), mmd_alignment([0.0, 0.0, 1.0]), None)


def test_negative_or_misshaped_level_weights_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        mmd_alignment([0.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="3 level weights"):
        DomainAdversarial(_net(), [1.0, 1.0])


def test_resume_from_checkpoint_reaches_the_uninterrupted_state(tmp_path):
    target = _batches(3, 5, labelled=False)
    full = _net()
    _trainer(full, coral_alignment([0.0, 1.0, 1.0]), target, epochs=2).run()

    first = _net()
    trainer = _trainer(first, coral_alignment([0.0, 1.0, 1.0]), target, epochs=1)
    TrainingCheckpoint(str(tmp_path), {"model": first, "optimizer": trainer.optimizer}).attach(trainer)
    trainer.run()

    resumed = _net()
    trainer = _trainer(resumed, coral_alignment([0.0, 1.0, 1.0]), target, epochs=2)
    TrainingCheckpoint(str(tmp_path), {"model": resumed, "optimizer": trainer.optimizer}, resume=True).attach(trainer)
    trainer.run()
    assert trainer.state.iteration == 6
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize(
    "objective",
    [lambda net: MeanTeacher(decay=0.9, confidence=0.0), lambda net: DomainAdversarial(net, [0.0, 1.0, 1.0], schedule=False)],
    ids=["mean_teacher", "dann"],
)
def test_resume_restores_the_objective_state(tmp_path, objective):
    """The teacher / domain classifier is checkpointed: the resumed run ends where the uninterrupted one does
    (DANN without its schedule, whose pace depends on max_epochs, which the interrupted run sets to 1)."""
    target = _batches(3, 5, labelled=False)

    def run(epochs: int, resume: bool) -> tuple[UNet, torch.nn.Module]:
        network = _net()
        adaptation = objective(network)
        trainer = _trainer(network, adaptation, target, epochs=epochs)
        save = {"model": network, "optimizer": trainer.optimizer, "adaptation": adaptation}
        TrainingCheckpoint(str(tmp_path / "ckpt"), save, resume=resume).attach(trainer)
        trainer.run()
        return network, adaptation

    full_net, full_objective = run(2, resume=False)
    for stale in (tmp_path / "ckpt").iterdir():
        stale.unlink()  # the interrupted run starts from scratch
    run(1, resume=False)
    resumed_net, resumed_objective = run(2, resume=True)
    for p, q in zip(full_net.state_dict().values(), resumed_net.state_dict().values()):
        torch.testing.assert_close(p, q)
    assert full_objective.state_dict()
    torch.testing.assert_close(full_objective.state_dict(), resumed_objective.state_dict())  # nested: the teacher's weights too


def test_resume_from_a_checkpoint_without_the_objective_warns_and_continues(tmp_path, caplog):
    target = _batches(3, 5, labelled=False)
    network = _net()
    trainer = _trainer(network, MeanTeacher(confidence=0.0), target, epochs=1)
    TrainingCheckpoint(str(tmp_path), {"model": network, "optimizer": trainer.optimizer}).attach(trainer)
    trainer.run()

    network = _net()
    adaptation = MeanTeacher(confidence=0.0)
    trainer = _trainer(network, adaptation, target, epochs=2)
    save = {"model": network, "optimizer": trainer.optimizer, "adaptation": adaptation}
    TrainingCheckpoint(str(tmp_path), save, resume=True).attach(trainer)
    with caplog.at_level("WARNING"):
        trainer.run()
    assert trainer.state.iteration == 6
    assert "holds no adaptation" in caplog.text


def test_deploy_teacher_leaves_the_ema_teacher_in_the_network_for_the_final_saver(tmp_path):
    from custom.handlers import AtomicCheckpointSaver

    target = _batches(3, 5, labelled=False)
    student, teacher = _net(), _net()
    _trainer(student, MeanTeacher(decay=0.5, confidence=0.0), target).run()
    objective = MeanTeacher(decay=0.5, confidence=0.0, deploy_teacher=True)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": teacher}, save_final=True, final_filename="final.pt")
    _trainer(teacher, objective, target, handlers=[saver]).run()
    ema = objective.get_extra_state()
    saved = torch.load(tmp_path / "final.pt", weights_only=True)
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, ema[name])
        torch.testing.assert_close(saved[name], ema[name])
    assert any(not torch.equal(p, q) for p, q in zip(student.parameters(), teacher.parameters()))  # the teacher, not the student


def test_dann_reverses_gradients_into_the_encoder():
    network = _net()
    objective = DomainAdversarial(network, [0.0, 0.0, 1.0], schedule=False, grl_max=1.0)
    source, target = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)

    def encoder_and_classifier_grads(scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        network.zero_grad()
        objective.zero_grad()
        objective.classifiers["2"].grl.scale = scale
        terms = objective(network, DomainBatch(source, network.encode(source)), DomainBatch(target, network.encode(target)))
        terms["dann_l2"].backward()
        head = objective.classifiers["2"].head.weight.grad.clone()
        return network.encoder[2][1][0].conv.weight.grad.clone(), head

    reversed_grad, head_reversed = encoder_and_classifier_grads(1.0)
    plain_grad, head_plain = encoder_and_classifier_grads(-1.0)  # scale -1 = no reversal
    torch.testing.assert_close(reversed_grad, -plain_grad)
    torch.testing.assert_close(head_reversed, head_plain)  # the classifier itself is not reversed


def test_ynet_reconstruction_only_sees_the_bottleneck():
    ynet = YNet(_net()).eval()
    features = ynet.unet.encode(torch.randn(2, 1, 16, 16))
    changed = [torch.randn_like(f) for f in features[:-1]] + [features[-1]]
    torch.testing.assert_close(ynet.reconstruct(features), ynet.reconstruct(changed))
    bottleneck_changed = features[:-1] + [features[-1] + 1.0]
    assert not torch.allclose(ynet.reconstruct(features), ynet.reconstruct(bottleneck_changed))


@pytest.mark.parametrize(
    "make_objective",
    [
        lambda net: Reconstruction(net, weight=1.0),
        lambda net: TwoStream(net, weight=1.0, alignment=mmd_alignment([0.0, 0.0, 1.0])),
        lambda net: DomainAdversarial(net, [0.0, 1.0, 1.0]),
        lambda net: MeanTeacher(confidence=0.5),
        lambda net: MeanTeacher(confidence=0.5, student_transform=RandGaussianNoise(prob=1.0, std=0.3)),
        lambda net: class_mmd_alignment([0.0, 1.0, 1.0], confidence=0.0),
    ],
    ids=["ynet", "two_stream", "dann", "mean_teacher", "consistency", "class_mmd"],
)
def test_every_objective_trains_and_changes_the_network(make_objective):
    network = _net()
    before = copy.deepcopy(network.state_dict())
    objective = make_objective(network)
    trainer = _trainer(network, objective, _batches(2, 5, labelled=False), epochs=1)
    trainer.run()
    names = [k for k in trainer.state.output if k.startswith("loss_") and k != "loss_seg"]
    assert names and all(torch.isfinite(torch.tensor(trainer.state.output[k])) for k in names)
    assert any(not torch.equal(before[k], v) for k, v in network.state_dict().items())


def test_two_stream_source_images_use_the_source_stream():
    network = _net()
    objective = TwoStream(network)
    assert objective.source_network(network) is objective.streams.source
    assert objective.streams.weight_regularizer().item() == pytest.approx(0.0)
    with torch.no_grad():
        objective.streams.source.encoder[0][0].conv.weight.add_(0.5)
    assert objective.streams.weight_regularizer().item() > 0


def test_two_stream_target_follows_the_trained_source_stream():
    """Only the source stream sees labels; the tie must carry what it learns to the deployed encoder."""
    network = _net()
    objective = TwoStream(network, weight=10.0)
    initial = copy.deepcopy(network)
    trainer = _trainer(network, objective, _batches(4, 5, labelled=False), epochs=5)
    trainer.run()
    streams = objective.streams
    source, start = dict(streams.source.encoder.named_parameters()), dict(initial.encoder.named_parameters())
    target = dict(network.encoder.named_parameters())
    with torch.no_grad():  # weights, biases and norm affines alike, up to the learned affine change
        moved = sum(((source[n] - start[n]) ** 2).sum() for n in streams.tied)
        lag = sum(((a * source[n] + b - target[n]) ** 2).sum() for n, a, b in zip(streams.tied, streams.scale, streams.shift))
    assert lag < 0.1 * moved
    images = _batches(1, 11)[0]["image"]
    network.eval(), objective.streams.source.eval()
    with torch.no_grad():
        assert torch.allclose(network(images).softmax(1), objective.streams.source(images).softmax(1), atol=0.2)


def test_two_stream_shares_the_deployed_decoder_and_normalises_every_deployed_layer():
    """#28 defect 1: the deployed network's decoder never ran in training mode (its batch-norm layers
    tracked 0 batches and normalised with mean 0 / var 1 at test time)."""
    network = _net()
    objective = TwoStream(network, weight=10.0)
    streams = objective.streams
    assert not any(p is q for p in streams.source.encoder.parameters() for q in network.encoder.parameters())
    assert sum(p.numel() for p in streams.source.parameters()) == sum(p.numel() for p in network.encoder.parameters())  # no decoder copy
    with torch.no_grad():
        images = _batches(1, 3)[0]["image"]
        network.eval()
        torch.testing.assert_close(streams.source(images), network.decode(streams.source.encode(images)))  # the deployed decoder
        network.train()
    trainer = _trainer(network, objective, _batches(2, 5, labelled=False), epochs=1)
    trainer.run()
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(int(m.num_batches_tracked) > 0 for m in norms)
    decoder_norms = [m for m in network.decoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    iterations = trainer.state.iteration
    assert decoder_norms and all(int(m.num_batches_tracked) == 2 * iterations for m in decoder_norms)  # the source and the target batch


def test_semi_supervised_target_labels_add_a_loss_term():
    trainer = _trainer(_net(), labelled=_batches(2, 9), epochs=1)
    trainer.run()
    assert "loss_seg_target" in trainer.state.output


def _two_class_batch(foreground_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 2, 32, 32) features whose class-1 locations sit 3 σ away from class 0, and the class map."""
    g = torch.Generator().manual_seed(seed)
    classes = (torch.rand(1, 32, 32, generator=g) < foreground_fraction).long()
    features = torch.randn(1, 2, 32, 32, generator=g) + 3.0 * classes[:, None]
    return features, classes


def test_class_conditional_mmd_ignores_a_class_balance_shift_that_plain_mmd_penalises():
    source_features, source_classes = _two_class_batch(0.05, seed=0)
    target_features, target_classes = _two_class_batch(0.40, seed=1)
    logits = torch.nn.functional.one_hot(target_classes, 2).movedim(-1, 1).float() * 20.0  # confident, correct
    source = DomainBatch(torch.zeros(1, 1, 32, 32), [source_features], labels=source_classes[:, None].float())
    target = DomainBatch(torch.zeros(1, 1, 32, 32), [target_features], decoder=lambda _: logits)
    torch.manual_seed(0)
    plain = mmd_alignment([1.0])(None, source, target)["mmd_l0"].item()
    conditional = class_mmd_alignment([1.0])(None, source, target)["class_mmd_l0"].item()
    assert conditional < 0.1 * plain
    shifted = DomainBatch(target.images, [target_features + 2.0], decoder=lambda _: logits)
    assert class_mmd_alignment([1.0])(None, source, shifted)["class_mmd_l0"].item() > 10 * conditional


def test_class_conditional_alignment_needs_source_labels_and_skips_sparse_classes():
    features, classes = _two_class_batch(0.05, seed=0)
    unlabelled = DomainBatch(torch.zeros(1, 1, 32, 32), [features], decoder=lambda _: torch.zeros(1, 2, 32, 32))
    with pytest.raises(ValueError, match="no labels"):
        class_mmd_alignment([1.0])(None, unlabelled, unlabelled)
    labelled = DomainBatch(unlabelled.images, [features], labels=classes[:, None].float())
    assert class_mmd_alignment([1.0], confidence=0.9)(None, labelled, unlabelled) == {}  # no confident target pixel


def test_domain_batch_needs_features_or_an_encoder():
    with pytest.raises(ValueError, match="encoder"):
        DomainBatch(torch.zeros(1, 1, 8, 8))


def test_consistency_student_sees_its_own_view_teacher_the_clean_image():
    network = _net().eval()
    images = torch.randn(2, 1, 16, 16)
    encoded = []
    target = DomainBatch(images, encoder=lambda x: encoded.append(x) or network.encode(x), decoder=network.decode)
    objective = MeanTeacher(confidence=0.0, student_transform=lambda image: image + 1.0)
    loss = objective(network, target, target)["self_training"]
    with torch.no_grad():
        labels = network(images).argmax(1)  # the teacher is a copy of the network: clean-image labels
        expected = torch.nn.functional.cross_entropy(network(images + 1.0), labels)
    torch.testing.assert_close(loss, expected)
    assert not encoded  # the student's view replaces the clean target forward pass, which is never computed


def test_consistency_student_view_is_seeded_and_keeps_the_shape():
    images = torch.randn(2, 1, 16, 16)

    def first_view() -> torch.Tensor:
        torch.manual_seed(0)
        objective = MeanTeacher(student_transform=RandGaussianNoise(prob=1.0, std=0.5))
        objective._teacher_for(_net())  # the first iteration seeds the transform from torch's generator
        return objective.student_view(images)

    torch.testing.assert_close(first_view(), first_view())
    assert not torch.allclose(first_view(), images)
    with pytest.raises(ValueError, match="only change intensities"):
        MeanTeacher(student_transform=SpatialPad((20, 20))).student_view(images)


def test_teacher_batch_stats_normalise_with_the_target_batch_and_keep_running_stats():
    network = _net()
    network.train()
    network(torch.randn(4, 1, 16, 16) * 3.0 + 2.0)  # running statistics of another "domain"
    images = torch.randn(2, 1, 16, 16)
    objective = MeanTeacher(teacher_batch_stats=True)
    labels, _ = objective.pseudo_labels(network, images)
    teacher = objective._teacher[0]
    running = {k: v.clone() for k, v in teacher.state_dict().items() if "running" in k}
    with torch.no_grad():
        torch.testing.assert_close(labels, network(images).argmax(1))  # the network in training mode: batch statistics
        assert not torch.equal(labels, network.eval()(images).argmax(1))  # running statistics would label differently
    objective.pseudo_labels(network, images)
    assert all(torch.equal(running[k], teacher.state_dict()[k]) for k in running)


def _net_predicting_some_foreground(images: torch.Tensor, share: float = 0.2) -> torch.nn.Module:
    """An untrained network (eval mode) whose head bias makes it label about ``share`` of ``images``' pixels foreground."""
    network = _net().eval()
    head = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        head.bias[1] -= network(images).diff(dim=1).quantile(1 - share)
    return network


def test_class_balanced_pseudo_labels_weigh_each_class_alike():
    images = torch.randn(2, 1, 16, 16)
    network = _net_predicting_some_foreground(images)
    with torch.no_grad():
        logits = network(images)
    target = DomainBatch(images, encoder=network.encode, decoder=network.decode)
    labels = logits.argmax(1)
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    classes = labels.unique()
    assert len(classes) == 2 and (labels == classes[0]).sum() != (labels == classes[1]).sum()
    balanced = MeanTeacher(confidence=0.0, class_balanced=True)(network, target, target)["self_training"]
    plain = MeanTeacher(confidence=0.0)(network, target, target)["self_training"]
    torch.testing.assert_close(balanced, torch.stack([per_pixel[labels == c].mean() for c in classes]).mean())
    torch.testing.assert_close(plain, per_pixel.mean())
    assert not torch.allclose(balanced, plain)
    nothing_kept = MeanTeacher(confidence=1.1, class_balanced=True)(network, target, target)["self_training"]
    assert nothing_kept.item() == 0.0 and nothing_kept.requires_grad


def test_teacher_tta_labels_from_logits_averaged_over_in_plane_flips():
    images = torch.randn(2, 1, 16, 16)
    network = _net_predicting_some_foreground(images, share=0.5)
    labels, keep = MeanTeacher(confidence=0.6, teacher_tta=True).pseudo_labels(network, images)
    with torch.no_grad():
        logits = (network(images) + network(images.flip(2)).flip(2) + network(images.flip(3)).flip(3)) / 3
    probs = torch.softmax(logits, 1)
    torch.testing.assert_close(labels, probs.argmax(1))
    torch.testing.assert_close(keep, probs.amax(1) >= 0.6)
    plain, _ = MeanTeacher(confidence=0.6).pseudo_labels(network, images)
    assert not torch.equal(labels, plain)  # the flips change labels near this network's decision boundary


def test_joint_batch_norm_mode_shows_the_alignment_loss_a_per_channel_shift_that_separate_forwards_hide():
    """#28 defect 2: normalising each domain with its own batch statistics matches their per-channel
    moments before MMD sees them; one joint forward keeps the difference that exists at test time."""
    shifted = [{"image": b["image"] * 3.0 + 4.0} for b in _batches(2, 5, labelled=False)]  # another contrast and offset
    values = {}
    for mode in ("separate", "joint"):
        network = _net()
        trainer = _trainer(network, mmd_alignment([1.0, 0.0, 0.0]), shifted, epochs=1, batch_norm_mode=mode)
        trainer.run()
        values[mode] = trainer.state.output["loss_mmd_l0"]
        first = next(m for m in network.encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
        assert int(first.num_batches_tracked) == trainer.state.iteration * (2 if mode == "separate" else 1)
    assert values["joint"] > 5 * values["separate"]
    with pytest.raises(ValueError, match="batch_norm_mode must be one of"):
        _trainer(_net(), mmd_alignment([1.0, 0.0, 0.0]), shifted, batch_norm_mode="shared")
    network = _net()
    with pytest.raises(ValueError, match="two-stream"):
        _trainer(network, TwoStream(network), shifted, batch_norm_mode="joint")


def test_domain_specific_batch_norm_keeps_the_target_statistics_in_the_network_and_the_source_beside_it(tmp_path):
    """#28 remedy (b): each domain is normalised with, and tracks, its own running statistics; the
    network (every saved model) holds the target's in every layer, decoder included; the source's are
    checkpointed with the objective, so a resumed run ends where the uninterrupted one does."""
    shifted = [{"image": b["image"] * 3.0 + 4.0} for b in _batches(3, 5, labelled=False)]  # target: mean 4, std 3

    def run(epochs: int, resume: bool) -> tuple[UNet, torch.nn.Module]:
        network = _net()
        adaptation = mmd_alignment([1.0, 0.0, 0.0])
        trainer = _trainer(network, adaptation, shifted, epochs=epochs, batch_norm_mode="domain_specific")
        save = {"model": network, "optimizer": trainer.optimizer, "adaptation": adaptation}
        TrainingCheckpoint(str(tmp_path / "ckpt"), save, resume=resume).attach(trainer)
        trainer.run()
        return network, adaptation

    network, adaptation = run(2, resume=False)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert all(int(m.num_batches_tracked) == 6 for m in norms)  # decoder layers too: target batches are decoded
    first, source = norms[0], adaptation.source_statistics
    assert int(source.num_batches_tracked_0) == 6
    # the first layer sees the raw images through one convolution: target statistics far from the source's
    assert (first.running_var.mean() / source.running_var_0.mean()) > 2
    separate = _net()
    _trainer(separate, mmd_alignment([1.0, 0.0, 0.0]), shifted, epochs=2).run()
    blended = next(m for m in separate.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    assert source.running_var_0.mean() < blended.running_var.mean() < first.running_var.mean()
    for stale in (tmp_path / "ckpt").iterdir():
        stale.unlink()
    run(1, resume=False)
    resumed, resumed_objective = run(2, resume=True)
    torch.testing.assert_close(network.state_dict(), resumed.state_dict())
    torch.testing.assert_close(adaptation.state_dict(), resumed_objective.state_dict())
    plain = _net()
    plain.load_state_dict(network.state_dict())  # the saved network is a plain U-Net: deployable as it is
    net = _net()
    with pytest.raises(ValueError, match="two-stream"):
        _trainer(net, TwoStream(net), shifted, batch_norm_mode="domain_specific")
