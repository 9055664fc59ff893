"""What the benchmark scripts share: real-data preparation, argument checks, worker settings, result files."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from custom.utils import atomic_path, git_commit

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
DATA_RECORD = "spacing_nm.json"  # in a model folder: the domain pixel sizes its models were trained at
DEVELOPMENT_SUFFIX = "_development"  # <budget>_development: where a budget's development cells and work go (development_pairs.py)
TRAINED_MARKER = "training_complete"  # in a run folder once its training finished: {"commit", "epochs"}
TRAINING_LOCK = ".training.lock"  # in a run folder while a process trains there
SELECTION_KINDS = ("uda", "bound")  # kinds of cached cells that are label-free selection candidates (bound: source-only only)


def prepare(data_dir: str, out: Path, command: str = "from_dir") -> Path:
    """Run ``prepare_data.py <command> data_dir out`` (it keeps a complete earlier result); return ``out``."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), command, data_dir, str(out)], check=True)
    return out


def check_model_dir(model_dir: Path, spacing_nm: dict) -> None:
    """Refuse a model folder whose models were trained at other domain pixel sizes than
    ``spacing_nm`` (or before they were recorded in it): they must never be reused."""
    record = model_dir / DATA_RECORD
    if record.exists():
        recorded = json.loads(record.read_text())
        if recorded != spacing_nm:
            raise SystemExit(f"models under {model_dir} were trained with domain pixel sizes {recorded} (nm), the data now has {spacing_nm}: move that folder away or pass another --work-dir.")
    elif model_dir.exists() and any(model_dir.iterdir()):
        raise SystemExit(f"{model_dir} holds models of unknown domain pixel sizes (no {DATA_RECORD}): move that folder away or pass another --work-dir.")


def claim_model_dir(model_dir: Path, spacing_nm: dict) -> None:
    """``check_model_dir``, then record ``spacing_nm`` in ``model_dir`` as the pixel sizes its models are trained at."""
    check_model_dir(model_dir, spacing_nm)
    write_result(model_dir / DATA_RECORD, spacing_nm)


def train_once(root: Path, name: str, epochs: int, train: Callable[[], None], unrecorded_epochs: int | None = None, revision: int = 1) -> None:
    """Run ``train`` (``name``'s training of ``epochs`` epochs into ``root``) unless ``root`` holds a
    finished one, then mark it finished with its epochs.

    ``model_final.pt`` alone proves nothing (runs cached before our saver stopped writing it on a
    failure may hold partial weights), hence the marker. A finished training of other epochs is refused, never reused; a marker from before
    epochs were recorded counts as ``unrecorded_epochs`` (default: ``epochs``); one of another method
    ``revision`` (unrecorded: 1) is refused too. While it trains, a
    lock in ``root`` makes a second process that asks for the same training exit with the folder named.
    """
    marker = root / TRAINED_MARKER
    if not marker.exists():
        root.mkdir(parents=True, exist_ok=True)
        with open(root / TRAINING_LOCK, "w") as lock:
            try:  # two processes resuming the same run would delete each other's checkpoints
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SystemExit(f"{root}: another process is training {name} there now; run other rows or seeds in parallel, never the same one.") from None
            if not marker.exists():  # another process may have finished it since the first look
                train()
                with atomic_path(marker) as tmp:
                    tmp.write_text(json.dumps({"commit": git_commit(REPO), "epochs": epochs, "revision": revision}))
                return
    try:
        recorded = json.loads(marker.read_text())
        finished = recorded["epochs"]
    except (ValueError, KeyError, TypeError):  # the commit alone
        recorded, finished = {}, epochs if unrecorded_epochs is None else unrecorded_epochs
    if finished != epochs:
        raise SystemExit(f"{root} holds a finished training of {finished} epochs, but {name} now trains {epochs}: move or remove that folder to train it again.")
    if recorded.get("revision", 1) != revision:
        raise SystemExit(f"{root} holds a training of revision {recorded.get('revision', 1)} of {name}'s method, now {revision}: move or remove that folder to train it again.")


def chosen(requested: str | Iterable[str], known: Iterable[str], what: str) -> list[str]:
    """``requested`` (one name or several) as a list, or exit with the names that are known."""
    names = [requested] if isinstance(requested, str) else list(requested)
    known = list(known)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; choose from {sorted(known)}")
    return names


def worker_env(threads: int, device: str | None = None) -> dict:
    """Environment for bundle subprocesses with ``threads`` CPU threads (also set for this process);
    ``device`` ``"cpu"`` also hides any GPU from them."""
    torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def is_candidate(cell: dict) -> bool:
    """Whether a cached benchmark cell is a label-free selection candidate: an unsupervised row or source-only."""
    return cell.get("kind") in SELECTION_KINDS and (cell["kind"] != "bound" or cell["row"] == "source_only")


def write_result(path: Path, result: dict) -> None:
    """Write one cached run as JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1))


def reproduces(metrics: dict, recorded: dict) -> bool:
    """Whether ``metrics`` give every one of the ``recorded`` metrics to 1e-6."""
    return set(metrics) == set(recorded) and all(abs(metrics[k] - recorded[k]) <= 1e-6 for k in recorded)


def bar_chart(
    labels: list[str], series: dict[str, list[tuple[float, float]]], path: Path, title: str, ylabel: str, ylim: tuple[float, float] | None = (0, 1)
) -> None:
    """Grouped bars with error bars: one group per label, one bar per series of (mean, std; NaN: no bar);
    PNG, atomic. ``ylim`` None: fitted to the data, with a line at zero (for differences)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 4))
    x, width = np.arange(len(labels)), 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, [m for m, _ in values], width, yerr=[s for _, s in values], capsize=3, label=name)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel(ylabel)
    if ylim is None:
        ax.axhline(0, color="0.3", linewidth=0.8)
    else:
        ax.set_ylim(*ylim)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
