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
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from benchmark_common import write_result
from recipes import OVERLAYS, Recipe, RecipeRun

from custom.data import load_datalist, read_label, read_volume, write_volume
from custom.inference.zarr_output import ZarrSegmentation
from custom.metrics.selection import (
    augmentation_agreement,
    batch_nuclear_norm,
    bbse_foreground_fraction,
    confusion_rates,
    consensus_agreement,
    information_maximization,
    mlls_foreground_fraction,
    prediction_entropy,
    soft_neighborhood_density,
)
from custom.utils import run_bundle_logged

# Test-time configs a deployed model can carry: AdaBN / TENT are baked into the saved weights
# (``save_adapted.json``), test-time augmentation is a segmentation option.
BAKED_TEST_TIME = {"da/adabn.json", "da/tent.json"}
TTA_CONFIG = "tta.json"
DEPLOYABLE = BAKED_TEST_TIME | {TTA_CONFIG}
SCORE_PIXELS = 2_000_000  # pixels of the scored region used by entropy and IM (evenly strided)
TARGET_REGION, SOURCE_VALIDATION = "target_region.zarr", "source_validation.zarr"
ROTATED_REGION = "target_region_rotated.zarr"  # the target region rotated by 180°, for ``rotation_agreement``
OUTPUT_SCORES = (  # what ``output_scores`` returns
    "predicted_foreground_fraction", "information_maximization", "prediction_entropy", "batch_nuclear_norm", "soft_neighborhood_density", "mlls_foreground_fraction",
)  # fmt: skip


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


def output_scores(on_target: Path, source_foreground_fraction: float | None = None) -> dict:
    """The scores of one candidate's kept target-region segmentation alone: predicted foreground
    fraction, information maximisation, entropy, batch nuclear norm, soft neighbourhood density (on
    the two-class probabilities) and, given the source's labelled foreground fraction, the MLLS
    estimate of the target's."""
    p = read_zarr(on_target, "probability").astype(np.float32) / 255.0
    flat = p.reshape(-1)[:: max(1, p.size // SCORE_PIXELS)]
    two_class = np.stack([1 - flat, flat], axis=1)
    mlls = None if source_foreground_fraction is None else mlls_foreground_fraction(flat, source_foreground_fraction)
    return {
        "predicted_foreground_fraction": float((read_zarr(on_target, "labels/mask/0") > 0).mean()),
        "information_maximization": information_maximization(two_class),
        "prediction_entropy": prediction_entropy(two_class),
        "batch_nuclear_norm": batch_nuclear_norm(two_class),
        "soft_neighborhood_density": soft_neighborhood_density(two_class),
        "mlls_foreground_fraction": mlls,
    }


def scores(deployed: dict, folder: Path, target_region: str, source_validation: dict | None, bundle: Path, device: str) -> dict:
    """One candidate's scores that need no other candidate: ``output_scores``, the BBSE estimate of
    the target foreground fraction from the source-validation confusion (None without a source
    region) and ``rotation_agreement``; its target-region segmentation stays in ``folder`` for ``consensus``."""
    on_target = segment(deployed, target_region, folder / TARGET_REGION, bundle, device)
    confusion, source_fraction = None, None
    if source_validation is not None:
        truth = read_label(source_validation["label"])[0] > 0
        on_source = segment(deployed, source_validation["image"], folder / SOURCE_VALIDATION, bundle, device)
        confusion, source_fraction = confusion_rates(read_zarr(on_source, "labels/mask/0") > 0, truth), float(truth.mean())
    result = output_scores(on_target, source_fraction)
    bbse = None if confusion is None else _bbse(confusion, result["predicted_foreground_fraction"])
    rotation = rotation_agreement(deployed, folder, target_region, bundle, device)
    return {**result, "bbse_foreground_fraction": bbse, "source_validation_foreground_fraction": source_fraction, "rotation_agreement": rotation}


def rotation_agreement(deployed: dict, folder: Path, target_region: str, bundle: Path, device: str) -> float:
    """Dice between the candidate's target-region mask (``scores`` made it) and its mask of the region
    rotated by 180° in-plane, rotated back: agreement under a test-time augmentation that should not
    change the answer. The rotated segmentation is kept in ``folder`` (resumable)."""
    rotated = folder / ROTATED_REGION
    if not segmentation_complete(rotated):
        image, spacing = read_volume(target_region)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            turned = write_volume(Path(tmp) / "rotated.tif", np.ascontiguousarray(image[:, ::-1, ::-1]), spacing)
            segment(deployed, str(turned), rotated, bundle, device)
    mask = read_zarr(folder / TARGET_REGION, "labels/mask/0") > 0
    return augmentation_agreement(mask, [read_zarr(rotated, "labels/mask/0")[:, ::-1, ::-1] > 0])


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
