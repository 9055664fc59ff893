"""Shared fixtures: the repository, the real data folder beside it, and a cached synthetic dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES = REPO_ROOT / "bundles"
BUNDLE = BUNDLES / "em_mitochondria"
CONFIGS = BUNDLE / "configs"
SHARED_DATA = Path(os.environ.get("EM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker gets its share of the cores, for torch here and for the
    processes its tests start, so that n workers do not oversubscribe them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests needing it are skipped with the reason when it is absent."""
    if not (SHARED_DATA / "drosophila_vnc").is_dir():
        reason = f"real EM data not found at {SHARED_DATA} (set EM_SHARED_DATA to its folder)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic source/target pair in the prepared layout, made once per test session."""
    from custom.data import ensure_synthetic_dataset

    return Path(ensure_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "synthetic", n_sections=3, extent_nm=1000.0))


def run_bundle(
    configs: list[str | Path], bundle_root: Path, *overrides: str, timeout: int = 600, bundle: str = "em_mitochondria"
) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle run`` with the given config files (names inside ``bundle``'s configs/)."""
    bundle_root.mkdir(parents=True, exist_ok=True)
    from custom.utils import bundle_run_command

    cmd = bundle_run_command([BUNDLES / bundle / "configs" / c for c in configs], bundle_root, *overrides)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=bundle_root)
    if result.returncode != 0:
        raise AssertionError(f"bundle run failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def prepared(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real data converted once per session by ``scripts/prepare_data.py from_dir``."""
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "prepare_data.py"), "from_dir", str(shared_data), str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A ``model.pt`` of the bundle's default 2D U-Net (seeded weights, untrained)."""
    import torch

    from custom.networks import UNet

    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.manual_seed(0)
    torch.save(UNet(2).state_dict(), path)
    return str(path)


def kill_after_first_epoch(configs: list[str | Path], bundle_root: Path, *overrides: str) -> None:
    """Start a bundle training and SIGKILL it once its first epoch checkpoint exists (epochs left then)."""
    import signal
    import time

    from custom.utils import bundle_run_command

    process = subprocess.Popen(bundle_run_command(configs, bundle_root, *overrides), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = bundle_root / "models" / "train_checkpoint_epoch=1.pt"
    deadline = time.time() + 300
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training ended before it could be killed"
    assert not (bundle_root / "models" / "model_final.pt").exists()


def touching_disks(shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    """Two disks of radius 12 whose rims touch: instance labels 1 and 2 (0 = background)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    labels[(yy - 24) ** 2 + (xx - 20) ** 2 < 12**2] = 1
    labels[((yy - 24) ** 2 + (xx - 42) ** 2 < 12**2) & (labels == 0)] = 2
    return labels
