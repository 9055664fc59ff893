"""Data-parallel training on CPU with gloo: the multi_gpu_train.json bundle config and DataParallelSync."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine, Events
from monai.losses import DiceCELoss

from custom.engines import DomainAdaptationTrainer, DomainAdversarial, trainable_parameters
from custom.engines.utils import read_model_state
from custom.handlers import DataParallelSync
from custom.networks import UNet
from custom.utils import bundle_run_command

from .conftest import CONFIGS

ITERATIONS = 3


def _global_batches() -> list[dict]:
    g = torch.Generator().manual_seed(3)
    return [
        {"image": torch.randn(4, 1, 32, 32, generator=g), "label": (torch.rand(4, 1, 32, 32, generator=g) > 0.7).float()}
        for _ in range(ITERATIONS)
    ]


def _train(batches: list[dict], handlers: list, dann: bool = False) -> dict:
    """Train a small U-Net (with ``dann``: and a domain classifier beside it); return the states."""
    # Instance norm: batch norm normalises with per-rank batch statistics, so a split batch could
    # not reproduce the single-process run exactly (running statistics are averaged by the sync).
    torch.manual_seed(7)
    network = UNet(2, channels=(4, 8, 16), norm="instance")
    adaptation = DomainAdversarial(network, [0.0, 0.0, 1.0], schedule=False) if dann else None
    trainer = DomainAdaptationTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches,
        network=network,
        # SGD: Adam would turn the rounding of ~0 gradients into full-size steps
        optimizer=torch.optim.SGD(trainable_parameters(network, adaptation), lr=0.1, momentum=0.9),
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
        target_data_loader=[{"image": -b["image"]} for b in batches] if dann else None,
        adaptation=adaptation,
        train_handlers=handlers,
        decollate=False,
    )
    trainer.run()
    modules = {"network": network, "adaptation": adaptation} if dann else {"network": network}
    return {f"{m}.{k}": v for m, module in modules.items() for k, v in module.state_dict().items()}


class _ScrambleWeights:
    """Gives rank 1 other initial weights, which the broadcast at the start must replace."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: [p.data.normal_() for p in e.network.parameters()])


def _rank_worker(rank: int, world: int, init_file: str, out_dir: str, dann: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        half = [{k: v[rank::world] for k, v in b.items()} for b in _global_batches()]  # this rank's half of each batch
        handlers = [_ScrambleWeights()] if rank == 1 else []
        torch.save(_train(half, [*handlers, DataParallelSync()], dann), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path: Path, dann: bool) -> list[dict]:
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path), dann), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_ranks_equal_one_process_with_the_same_global_batch(tmp_path):
    ranks = _spawn(tmp_path, dann=False)
    single = _train(_global_batches(), [])
    for name, value in single.items():
        torch.testing.assert_close(ranks[0][name], ranks[1][name], rtol=0, atol=0)  # ranks never diverge
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-4, atol=1e-5)


def test_ranks_keep_the_adaptation_modules_identical(tmp_path):
    """DANN's domain classifier (batch norm inside) is optimised beside the network: same on every rank."""
    ranks = _spawn(tmp_path, dann=True)
    assert any(k.startswith("adaptation.") for k in ranks[0])
    for name, value in ranks[0].items():
        torch.testing.assert_close(value, ranks[1][name], rtol=0, atol=0)


@pytest.mark.parametrize("method", [None, "coral", "dann", "ynet", "two_stream"])
def test_multi_gpu_config_trains_on_two_cpu_ranks(tmp_path, synthetic_dir, method):
    configs = [CONFIGS / "train.json", *([CONFIGS / f"da/{method}.json"] if method else []), CONFIGS / "multi_gpu_train.json"]
    cmd = bundle_run_command(
        configs, tmp_path, "--dataset_dir", str(synthetic_dir), "--max_epochs", "2", "--iterations_per_epoch", "2",
        "--val_interval", "1", "--patch_size", "[64,64]", "--batch_size", "2",
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *cmd[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(torchrun, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert log.count("Train completed") == 2  # both ranks trained to the end
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["model.pt", "model_final.pt", "train_checkpoint_epoch=2.pt"]
    UNet().load_state_dict(read_model_state(models / "model_final.pt"))
    assert not list(models.glob("*.tmp*"))
    assert len(list((tmp_path / "runs").glob("events.out.tfevents.*"))) == 1  # rank 0's log only
