"""Label-free scores of trained candidates on a target: the path ``adapt.py``'s pick and the
benchmark's cells share, so that a score validated on the benchmark is the score users get.

A candidate is *deployed* as a model file (``deploy``: its test-time AdaBN / TENT baked into the
weights by ``configs/save_adapted.json``) plus segmentation options (test-time augmentation). It
segments the target's unlabelled training region and, when there is one, the labelled source
validation region through ``segment.py``'s blockwise path; ``scores`` turns those outputs into the
scores of ``custom.metrics.selection``. Target labels are never read here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from benchmark_common import write_result
from recipes import OVERLAYS, Recipe, RecipeRun

from custom.data import load_datalist, read_label
from custom.inference.zarr_output import ZarrSegmentation
from custom.metrics.selection import (
    bbse_foreground_fraction,
    confusion_rates,
    consensus_agreement,
    information_maximization,
    prediction_entropy,
)
from custom.utils import run_bundle_logged

# Test-time configs a deployed model can carry: AdaBN / TENT are baked into the saved weights
# (``save_adapted.json``), test-time augmentation is a segmentation option.
BAKED_TEST_TIME = {"da/adabn.json", "da/tent.json"}
TTA_CONFIG = "tta.json"
DEPLOYABLE = BAKED_TEST_TIME | {TTA_CONFIG}
SCORE_PIXELS = 2_000_000  # pixels of the scored region used by entropy and IM (evenly strided)
TARGET_REGION, SOURCE_VALIDATION = "target_region.zarr", "source_validation.zarr"


def deployable(recipe: Recipe) -> bool:
    """Whether every test-time config of ``recipe`` can be deployed as a model file + segmentation options."""
    return set(recipe.eval_configs) <= DEPLOYABLE


def deploy(run: RecipeRun, recipe: Recipe, folder: Path, progress_every_s: float | None = None) -> dict:
    """``recipe``'s deployable model (``folder/deploy.json``: checkpoint and ``tta``), made once; AdaBN /
    TENT are applied on the target training region of ``run``'s dataset and saved as ``folder/model.pt``."""
    record = folder / "deploy.json"
    if record.exists():
        return json.loads(record.read_text())
    checkpoint = run.checkpoint(recipe)
    baked = [c for c in recipe.eval_configs if c in BAKED_TEST_TIME]
    model = checkpoint
    if baked:
        model = folder / "model.pt"
        root = run.root_of(recipe.name)
        print(f"  test-time adaptation of {recipe.name} ({', '.join(baked)})", flush=True)
        run_bundle_logged(
            [run.bundle / "configs" / "inference.json", *(OVERLAYS / c for c in baked), OVERLAYS / "save_adapted.json"],
            root, root / "logs" / "test_time_adaptation.log", env=run.env, progress_every_s=progress_every_s,
            dataset_dir=str(run.dataset_dir), checkpoint=str(checkpoint), adapted_model_file=str(model),
            pixel_size_nm=run.budget["pixel_size_nm"], roi_size=run.window,
        )
    deployed = {"recipe": recipe.name, "checkpoint": str(model), "tta": TTA_CONFIG in recipe.eval_configs}
    write_result(record, deployed)
    return deployed


def segmentation_complete(path: Path) -> bool:
    """Whether ``path`` holds a finished blockwise segmentation (``ZarrSegmentation``'s record says so)."""
    return bool((ZarrSegmentation(path).recorded() or {}).get("complete"))


def read_zarr(path: Path, key: str) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_group(str(path), mode="r")[key][:])


def segment(deployed: dict, image: str, output: Path, bundle: Path, device: str, spacing: Sequence[float] | None = None) -> Path:
    """``segment.py``'s blockwise path at the model's pixel size (resumable; a finished output is kept)."""
    from segment import run as segment_cli

    if not segmentation_complete(output):
        segment_cli(
            image, str(output), bundle=str(bundle), checkpoint=deployed["checkpoint"], device=device, resample=True,
            tta=deployed["tta"], tta_rot90=deployed["tta"], input_spacing=spacing, min_size=0, quiet=True,
        )
    return output


def regions(dataset_dir: Path) -> tuple[str, dict | None]:
    """The image of a prepared dataset's unlabelled target training region (its labels are never read)
    and its source validation entry (image and label; None when only a model was given, no source)."""
    target_region = load_datalist(dataset_dir, "target_training", required=True)[0]["image"]
    return target_region, next(iter(load_datalist(dataset_dir, "validation")), None)


def _bbse(confusion: np.ndarray, predicted: float) -> float | None:
    """BBSE's target foreground fraction, None when the source confusion cannot be inverted (a model
    that predicts one class everywhere on the source)."""
    try:
        return bbse_foreground_fraction(confusion, predicted)
    except ValueError:
        return None


def scores(deployed: dict, folder: Path, target_region: str, source_validation: dict | None, bundle: Path, device: str) -> dict:
    """One candidate's scores that need no other candidate: predicted target foreground fraction, its
    BBSE estimate from the source-validation confusion (None without a source region), information
    maximisation and entropy; its target-region segmentation stays in ``folder`` for ``consensus``."""
    on_target = segment(deployed, target_region, folder / TARGET_REGION, bundle, device)
    p = read_zarr(on_target, "probability").astype(np.float32) / 255.0
    predicted = float((read_zarr(on_target, "labels/mask/0") > 0).mean())
    bbse, source_fraction = None, None
    if source_validation is not None:
        truth = read_label(source_validation["label"])[0] > 0
        on_source = segment(deployed, source_validation["image"], folder / SOURCE_VALIDATION, bundle, device)
        bbse, source_fraction = _bbse(confusion_rates(read_zarr(on_source, "labels/mask/0") > 0, truth), predicted), float(truth.mean())
    flat = p.reshape(-1)[:: max(1, p.size // SCORE_PIXELS)]
    two_class = np.stack([1 - flat, flat], axis=1)
    return {
        "predicted_foreground_fraction": predicted,
        "bbse_foreground_fraction": bbse,
        "source_validation_foreground_fraction": source_fraction,
        "information_maximization": information_maximization(two_class),
        "prediction_entropy": prediction_entropy(two_class),
    }


def consensus(folders: dict[str, Path]) -> dict[str, float]:
    """Each candidate's Dice against the thresholded mean probability of the others, from their
    target-region segmentations (``scores`` wrote them into each candidate's folder)."""
    return consensus_agreement({name: read_zarr(folder / TARGET_REGION, "probability").astype(np.float32) / 255.0 for name, folder in folders.items()})


def score_candidates(deployed: dict[str, dict], folders: dict[str, Path], dataset_dir: Path, bundle: Path, device: str) -> dict[str, dict]:
    """Every candidate's ``scores`` and its ``consensus_agreement`` with the others, on ``dataset_dir``'s regions."""
    target_region, source_validation = regions(dataset_dir)
    rows = {}
    for name, candidate in deployed.items():
        print(f"  scoring {name}", flush=True)
        rows[name] = scores(candidate, folders[name], target_region, source_validation, bundle, device)
    for name, value in consensus(folders).items():
        rows[name]["consensus_agreement"] = value
    return rows
