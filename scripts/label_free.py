"""Label-free scores of trained candidates on a target: the path ``adapt.py``'s pick and the
benchmark's cells share, so that a score validated on the benchmark is the score users get.

A candidate is *deployed* as a model file (``deploy``: its test-time AdaBN / TENT baked into the
weights by ``configs/save_adapted.json``) plus segmentation options (test-time augmentation). It
segments the target's unlabelled training region and, when there is one, the labelled source
validation region through ``segment.py``'s blockwise path; ``scores`` turns those outputs into the
scores of ``custom.metrics.selection``. Target labels are never read here.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from benchmark_common import write_result
from recipes import OVERLAYS, Recipe, RecipeRun

from custom.data import load_datalist, read_label, read_volume, write_volume
from custom.inference import resample_in_plane
from custom.inference.from_bundle import load_bundle_network
from custom.inference.zarr_output import ZarrSegmentation
from custom.networks import network_downsampling
from custom.metrics.selection import (
    balanced_agreement,
    batch_nuclear_norm,
    bbse_foreground_fraction,
    confusion_rates,
    consensus_agreement,
    dev_risk,
    dice_agreement,
    domain_probability,
    importance_weights,
    information_maximization,
    iwcv_risk,
    mlls_foreground_fraction,
    prediction_entropy,
    soft_neighborhood_density,
    tile_features_and_losses,
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
# a TTA candidate's network without its TTA, on the target region and rotated, for ``rotation_masks(network=True)``
PLAIN_TARGET_REGION, PLAIN_ROTATED_REGION = "target_region_plain.zarr", "target_region_rotated_plain.zarr"
SNAPSHOT_TARGET_REGION = "target_region_snapshot.zarr"  # the network of the run's 3/4 checkpoint, for ``checkpoint_agreement``
DEV_TILES = 128  # windows per domain whose features and source losses DEV / IWCV weigh
DEV_RECORD = "dev.json"  # a candidate's DEV / IWCV risks and the window they used, kept in its folder
DEV_SCORES = ("dev_risk", "iwcv_risk", "source_validation_loss")  # what ``dev_scores`` returns
ROTATION_SCORES = ("rotation_agreement", "network_rotation_agreement", "balanced_rotation_agreement")  # what ``rotation_scores`` returns
# Scores that need the model again, by the name ``model_selection.py validate --compute`` takes: what each gives
RECOMPUTABLE = {"rotation_agreement": ROTATION_SCORES, "dev": DEV_SCORES}
OUTPUT_SCORES = (  # what ``output_scores`` returns
    "predicted_foreground_fraction", "information_maximization", "prediction_entropy", "batch_nuclear_norm", "soft_neighborhood_density", "mlls_foreground_fraction",
)  # fmt: skip


def deployable(recipe: Recipe) -> bool:
    """Whether every test-time config of ``recipe`` can be deployed as a model file + segmentation options."""
    return set(recipe.eval_configs) <= DEPLOYABLE


def deploy(run: RecipeRun, recipe: Recipe, folder: Path, progress_every_s: float | None = None) -> dict:
    """``recipe``'s deployable model (``folder/deploy.json``: checkpoint, ``tta`` and ``snapshot``, the same
    deployment of the checkpoint its training kept at 3/4 of its epochs, or None), made once; AdaBN / TENT
    are applied on the target training region of ``run``'s dataset and saved as ``folder/model.pt`` (and
    ``folder/model_snapshot.pt``)."""
    record = folder / "deploy.json"
    if record.exists():
        return json.loads(record.read_text())
    model = _test_time_adapted(run, recipe, run.checkpoint(recipe), folder / "model.pt", progress_every_s)
    snapshot = run.snapshot(recipe)
    if snapshot is not None:
        snapshot = _test_time_adapted(run, recipe, snapshot, folder / "model_snapshot.pt", progress_every_s)
    deployed = {"recipe": recipe.name, "checkpoint": str(model), "tta": TTA_CONFIG in recipe.eval_configs, "snapshot": None if snapshot is None else str(snapshot)}
    write_result(record, deployed)
    return deployed


def _test_time_adapted(run: RecipeRun, recipe: Recipe, checkpoint: Path, model: Path, progress_every_s: float | None) -> Path:
    """``checkpoint`` with ``recipe``'s AdaBN / TENT baked in, saved as ``model``; ``checkpoint`` itself
    when the recipe has no test-time adaptation."""
    baked = [c for c in recipe.eval_configs if c in BAKED_TEST_TIME]
    if not baked:
        return checkpoint
    root = run.root_of(recipe.name)
    print(f"  test-time adaptation of {recipe.name} ({', '.join(baked)}) -> {model.name}", flush=True)
    run_bundle_logged(
        [run.bundle / "configs" / "inference.json", *(OVERLAYS / c for c in baked), OVERLAYS / "save_adapted.json"],
        root, root / "logs" / f"test_time_adaptation_{model.stem}.log", env=run.env, progress_every_s=progress_every_s,
        dataset_dir=str(run.dataset_dir), checkpoint=str(checkpoint), adapted_model_file=str(model),
        pixel_size_nm=run.budget["pixel_size_nm"], roi_size=run.window,
    )
    return model


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
    the target foreground fraction from the source-validation confusion and ``dev_scores`` (both
    only with a source region), ``rotation_agreement`` and ``checkpoint_agreement``; its target-region segmentation stays in ``folder`` for ``consensus``."""
    on_target = segment(deployed, target_region, folder / TARGET_REGION, bundle, device)
    confusion, source_fraction = None, None
    if source_validation is not None:
        truth = read_label(source_validation["label"])[0] > 0
        on_source = segment(deployed, source_validation["image"], folder / SOURCE_VALIDATION, bundle, device)
        confusion, source_fraction = confusion_rates(read_zarr(on_source, "labels/mask/0") > 0, truth), float(truth.mean())
    result = output_scores(on_target, source_fraction)
    bbse = None if confusion is None else _bbse(confusion, result["predicted_foreground_fraction"])
    rotation = rotation_scores(deployed, folder, target_region, bundle, device)
    dev = {} if source_validation is None else dev_scores(deployed, folder, target_region, source_validation, bundle, device)
    checkpoints = checkpoint_scores(deployed, folder, target_region, bundle, device)
    return {**result, "bbse_foreground_fraction": bbse, "source_validation_foreground_fraction": source_fraction, **rotation, **dev, **checkpoints}


def rotation_scores(deployed: dict, folder: Path, target_region: str, bundle: Path, device: str) -> dict:
    """Agreement under a 180° rotation (``rotation_masks``): Dice of the deployed candidate's masks,
    Dice of its network's (the same unless the candidate is deployed with TTA) and the network's
    ``balanced_agreement`` (an empty or full mask scores at most 0.5, not 1)."""
    deployed_masks = rotation_masks(deployed, folder, target_region, bundle, device)
    network_masks = rotation_masks(deployed, folder, target_region, bundle, device, network=True) if deployed["tta"] else deployed_masks
    return {
        "rotation_agreement": dice_agreement(*deployed_masks),
        "network_rotation_agreement": dice_agreement(*network_masks),
        "balanced_rotation_agreement": balanced_agreement(*network_masks),
    }


def checkpoint_scores(deployed: dict, folder: Path, target_region: str, bundle: Path, device: str) -> dict:
    """Agreement across checkpoints of one run: ``balanced_agreement`` of the candidate's network (without
    its test-time augmentation) on the target region with the same deployment of the checkpoint its training
    kept at 3/4 of its epochs (``deploy``'s ``snapshot``): a run still changing its answer late in training
    scores low. None without a snapshot (a given model, a training too short to keep one)."""
    if not deployed.get("snapshot"):
        return {"checkpoint_agreement": None}
    plain, final = network_on_target(deployed, folder, target_region, bundle, device)
    earlier = segment({**plain, "checkpoint": deployed["snapshot"]}, target_region, folder / SNAPSHOT_TARGET_REGION, bundle, device)
    return {"checkpoint_agreement": balanced_agreement(read_zarr(final, "labels/mask/0") > 0, read_zarr(earlier, "labels/mask/0") > 0)}


def network_on_target(deployed: dict, folder: Path, target_region: str, bundle: Path, device: str) -> tuple[dict, Path]:
    """The candidate's network without its test-time augmentation and its target-region segmentation
    (the deployed candidate and ``scores``' segmentation when it has no TTA)."""
    if not deployed["tta"]:
        return deployed, segment(deployed, target_region, folder / TARGET_REGION, bundle, device)
    plain = {**deployed, "tta": False}
    return plain, segment(plain, target_region, folder / PLAIN_TARGET_REGION, bundle, device)


def rotation_masks(deployed: dict, folder: Path, target_region: str, bundle: Path, device: str, network: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The candidate's target-region mask (``scores`` made it) and its mask of the region rotated by
    180° in-plane, rotated back. ``network``: of the candidate's network without its test-time
    augmentation (a TTA prediction, averaged over flips and 90° rotations, agrees with its rotated
    self by construction; without TTA it is the deployed one's). The segmentations are kept in
    ``folder``; the rotated input stays at one path until its segmentation is complete, so a killed run resumes it."""
    on_target, rotated = folder / TARGET_REGION, folder / ROTATED_REGION
    if network and deployed["tta"]:
        deployed, on_target = network_on_target(deployed, folder, target_region, bundle, device)
        rotated = folder / PLAIN_ROTATED_REGION
    turned = rotated.with_suffix(".tif")
    if not segmentation_complete(rotated):
        if not turned.exists():  # written atomically: present means complete
            image, spacing = read_volume(target_region)
            write_volume(turned, np.ascontiguousarray(image[:, ::-1, ::-1]), spacing)
        segment(deployed, str(turned), rotated, bundle, device)
    turned.unlink(missing_ok=True)
    return read_zarr(on_target, "labels/mask/0") > 0, read_zarr(rotated, "labels/mask/0")[:, ::-1, ::-1] > 0


def kept_scores(deployed: dict, folder: Path) -> tuple[str, ...]:
    """Which of the ``RECOMPUTABLE`` scores ``folder`` keeps the results of: served from there without
    running the model again."""
    rotated = [folder / ROTATED_REGION] + ([folder / PLAIN_ROTATED_REGION, folder / PLAIN_TARGET_REGION] if deployed["tta"] else [])
    kept = ("rotation_agreement",) if all(segmentation_complete(p) for p in rotated) else ()
    return kept + (("dev",) if (folder / DEV_RECORD).exists() else ())


def region_at(image: str, pixel_size_nm: float, label: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A region as the network sees it at inference (normalised by its mean and standard deviation,
    resampled in-plane to ``pixel_size_nm``) and, given ``label``, its labels on the same grid."""
    volume, spacing = read_volume(image)
    volume = volume.astype(np.float32)
    volume = (volume - volume.mean()) / max(float(volume.std()), 1e-8)
    truth = None if label is None else (read_label(label)[0] > 0).astype(np.uint8)
    if spacing is not None:
        zoom = [s / pixel_size_nm for s in spacing[1:]]
        volume = resample_in_plane(volume, zoom)
        truth = None if truth is None else resample_in_plane(truth, zoom, nearest=True)
    return volume, truth


def fitting_window(window: Sequence[int], downsampling: Sequence[int], *shapes: Sequence[int]) -> tuple[int, ...]:
    """The largest window (Z, Y, X) no larger than ``window`` that fits every region of ``shapes`` and
    the network's ``downsampling`` divides (per axis, (Z, Y, X); 1 along Z for a 2D network)."""
    fitted = tuple(min(w, *(shape[i] for shape in shapes)) // d * d for i, (w, d) in enumerate(zip(window, downsampling)))
    if min(fitted) < 1:
        raise ValueError(f"regions {[tuple(s) for s in shapes]} are smaller than the network's downsampling {tuple(downsampling)}.")
    return fitted


def region_tiles(volume: np.ndarray, window: Sequence[int], count: int, seed: int = 0, truth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Up to ``count`` non-overlapping ``window`` (Z, Y, X) tiles of ``volume`` drawn at random, and the
    same tiles of ``truth``: (N, 1, *window) arrays, the Z axis dropped for a 2D window (Z = 1)."""
    corners = list(itertools.product(*(range(0, n - w + 1, w) for n, w in zip(volume.shape, window))))
    chosen = sorted(np.random.default_rng(seed).choice(len(corners), min(count, len(corners)), replace=False))

    def cut(array: np.ndarray) -> np.ndarray:
        tiles = np.stack([array[tuple(slice(c, c + w) for c, w in zip(corners[i], window))] for i in chosen])[:, None]
        return tiles[:, :, 0] if window[0] == 1 else tiles

    return cut(volume), None if truth is None else cut(truth)


def dev_scores(deployed: dict, folder: Path, target_region: str, source_validation: dict, bundle: Path, device: str) -> dict:
    """DEV and IWCV risks of a candidate (lower is better) and its plain source-validation loss: per
    window of the labelled source validation region, the pixel cross-entropy, weighted by the density
    ratio p_target / p_source of a domain classifier on the candidate's bottleneck features
    (``DEV_TILES`` windows per domain, the target's from its unlabelled training region; the
    inference window, shrunk where a region is narrower). The network runs without test-time
    augmentation; the result, with the window used, is kept in ``folder`` (``DEV_RECORD``)."""
    record = folder / DEV_RECORD
    if record.exists():
        return {k: v for k, v in json.loads(record.read_text()).items() if k in DEV_SCORES}
    network, parser = load_bundle_network(bundle, deployed["checkpoint"], device=device)
    pixel_size_nm, roi = float(parser.get_parsed_content("pixel_size_nm")), list(parser.get_parsed_content("roi_size"))
    source, truth = region_at(source_validation["image"], pixel_size_nm, source_validation["label"])
    target, _ = region_at(target_region, pixel_size_nm)
    downsampling = network_downsampling(network)
    window = fitting_window(roi if len(roi) == 3 else [1, *roi], downsampling if len(downsampling) == 3 else (1, *downsampling), source.shape, target.shape)
    source_tiles, labels = region_tiles(source, window, DEV_TILES, truth=truth)
    source_features, losses = tile_features_and_losses(network, source_tiles, labels, device)
    target_features, _ = tile_features_and_losses(network, region_tiles(target, window, DEV_TILES)[0], None, device)
    weights = importance_weights(domain_probability(source_features, target_features), len(source_features), len(target_features))
    result = {"dev_risk": dev_risk(losses, weights), "iwcv_risk": iwcv_risk(losses, weights), "source_validation_loss": float(losses.mean()), "window": list(window)}
    write_result(record, result)
    return {k: result[k] for k in DEV_SCORES}


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
