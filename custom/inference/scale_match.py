"""Object-scale matching: the target pixel size at which a model sees target objects at the size it learnt.

Resampling both domains to the same nanometres per pixel matches what the model sees only when the
pixel sizes are right and the organelles have the same physical size. Neither is guaranteed: the
FAFB mitochondria crops were first read at FAFB's native 4 nm but are at 8 nm, and the same organelle
can differ in size between tissues. A CNN trained on one size misses much smaller objects and splits
or over-segments much larger ones. Without any target label, ``match_target_pixel_size`` predicts
the unlabelled target at several pixel sizes and keeps the one at which the objects it finds have,
in model pixels, the typical area of the source's labelled objects at the training pixel size
(``typical_area``: the area-weighted median). It assumes the target's objects have the source's
physical size: it repairs a wrong or missing pixel size, and misleads where the tissues truly differ.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Compose, EnsureTyped, LoadImaged, NormalizeIntensityd

from custom.data import EMDataError, EMVolumeReader, read_label
from custom.engines.utils import load_pretrained
from custom.handlers import adapt_batchnorm
from custom.metrics import section_object_areas
from custom.transforms.spatial import ResampleToPixelSized
from custom.utils import atomic_path

from .predictor import VolumePredictor

logger = logging.getLogger(__name__)

# Candidate target pixel sizes, as factors of the training pixel size: quarter octaves from 1/2.8 to 2.8.
DEFAULT_FACTORS = tuple(2 ** (k / 4) for k in range(-6, 7))
BATCH_NORM_WINDOWS = 64  # target windows that re-estimate batch-norm statistics at each candidate size
MAX_SECTIONS = 3  # sections per target volume that a 2D model predicts at each candidate size (evenly spaced)
MAX_EXTENT_PX = 1024  # in-plane extent (pixels at the candidate size) of the central region predicted


def typical_area(areas: np.ndarray) -> float:
    """Area-weighted median of object areas: the size of the object that a typical foreground pixel
    belongs to. Unlike the plain median it ignores speckle (many tiny false objects hold few pixels)."""
    if areas.size == 0:
        return 0.0
    ordered = np.sort(np.asarray(areas, dtype=np.float64))
    cumulative = np.cumsum(ordered)
    return float(ordered[np.searchsorted(cumulative, cumulative[-1] / 2)])


def source_reference_area(label_paths: Sequence[str | os.PathLike], pixel_size_nm: float) -> float:
    """Typical object area (``typical_area``), in pixels of ``pixel_size_nm``, of the source label volumes' objects."""
    areas = []
    for path in label_paths:
        mask, spacing = read_label(path)
        if spacing is None:
            raise EMDataError(f"{path}: spacing unknown; object areas in nm need the label's pixel size.")
        areas.append(section_object_areas(mask) * (spacing[1] * spacing[2] / pixel_size_nm**2))
    areas = np.concatenate(areas) if areas else np.zeros(0)
    if areas.size == 0:
        raise EMDataError(f"no labelled object in {[str(p) for p in label_paths]}; scale matching needs source objects.")
    return typical_area(areas)


def _resampled(loaded: dict, pixel_size_nm: float, sections: int | None) -> np.ndarray:
    """A loaded target volume (``LoadImaged`` output) as the bundle's inference sees it at
    ``pixel_size_nm``: resampled, z-scored, (Z, Y, X); at most ``sections`` evenly spaced sections (all
    if None) and the central ``MAX_EXTENT_PX`` pixels in y and x, so that fine candidate sizes stay affordable."""
    prepare = Compose(
        [
            ResampleToPixelSized("image", pixel_size_nm=pixel_size_nm),
            NormalizeIntensityd("image"),
            EnsureTyped("image", dtype=torch.float32, track_meta=False),
        ]
    )
    volume = prepare(dict(loaded))["image"][0].numpy()
    if sections is not None and volume.shape[0] > sections:
        volume = volume[np.linspace(0, volume.shape[0] - 1, sections).round().astype(int)]
    crop = tuple(slice(max(0, (n - MAX_EXTENT_PX) // 2), max(0, (n - MAX_EXTENT_PX) // 2) + MAX_EXTENT_PX) for n in volume.shape[1:])
    return np.ascontiguousarray(volume[(slice(None), *crop)])


def grid_windows(volume: np.ndarray, roi_size: Sequence[int], limit: int = BATCH_NORM_WINDOWS) -> torch.Tensor:
    """Up to ``limit`` non-overlapping windows (N, 1, *roi_size) of a (Z, Y, X) volume on a regular grid,
    spread evenly over it; a 2D ``roi_size`` (Y, X) takes its windows section by section."""
    roi = tuple(int(r) for r in roi_size)
    stack = volume if len(roi) == 2 else volume[None]
    pad = [(0, 0)] + [(0, max(0, r - n)) for r, n in zip(roi, stack.shape[1:])]
    stack = np.pad(stack, pad, mode="reflect" if all(n > 1 for n in stack.shape[1:]) else "edge")
    starts = [range(0, n - r + 1, r) for r, n in zip(roi, stack.shape[1:])]
    corners = [(i, *c) for i in range(stack.shape[0]) for c in itertools.product(*starts)]
    chosen = [corners[j] for j in np.linspace(0, len(corners) - 1, min(limit, len(corners))).round().astype(int)]
    windows = [stack[(i, *(slice(c, c + r) for c, r in zip(corner, roi)))] for i, *corner in chosen]
    return torch.from_numpy(np.stack(windows)[:, None].astype(np.float32))


def match_target_pixel_size(
    network: torch.nn.Module,
    checkpoint: str | os.PathLike | None,
    target_images: Sequence[str | os.PathLike],
    source_labels: Sequence[str | os.PathLike],
    pixel_size_nm: float,
    roi_size: Sequence[int],
    spatial_dims: int = 2,
    factors: Sequence[float] = DEFAULT_FACTORS,
    sw_batch_size: int = 4,
    device: str | torch.device = "cpu",
    amp: bool = False,
    input_spacing_nm: Sequence[float] | None = None,
    out: str | os.PathLike | None = None,
    batch_norm_from_target: bool = False,
    max_sections: int = MAX_SECTIONS,
    side: str = "auto",
) -> dict:
    """The target pixel size (nm) whose predicted objects best match the source objects' size.

    ``network`` (a copy, with ``checkpoint`` loaded if given) predicts every unlabelled
    ``target_images`` volume (a 2D model: ``max_sections`` evenly spaced sections of it; at most
    ``MAX_EXTENT_PX`` central pixels in y and x) resampled to ``pixel_size_nm × f`` for candidate
    factors ``f``; a candidate's score is ``|log(typical predicted object area / source reference
    area)|`` (``typical_area``, in model pixels, objects per section), lowest wins, ties going to the
    factor nearest 1 (a candidate without any predicted object scores infinity).

    ``side="auto"`` first predicts at the factor nearest 1, then tries only the finer sizes if the
    objects found there are smaller than the source's, only the coarser ones if larger: far on the
    wrong side a model can split objects into pieces of the source's size and score well for the
    wrong reason. ``side="both"`` tries every factor. With ``batch_norm_from_target`` (evaluations
    that adapt batch norm to the target, AdaBN or TENT) each candidate first re-estimates the
    batch-norm statistics on windows of the target at that size (``adapt_batchnorm``).

    Returns ``{"pixel_size_nm", "factor", "reference_area_px", "candidates": [{"factor",
    "pixel_size_nm", "typical_area_px", "objects", "foreground", "score"}]}`` (the candidates tried),
    also written as JSON to ``out`` (atomically) when given.
    """
    if pixel_size_nm <= 0:
        raise ValueError(f"scale matching needs the training pixel size in nm (> 0), got {pixel_size_nm}.")
    if not target_images or not factors or min(factors) <= 0:
        raise ValueError(f"scale matching needs at least one target image and positive candidate factors, got {list(factors)}.")
    if side not in ("auto", "both"):
        raise ValueError(f"side must be 'auto' or 'both', got {side!r}.")
    trained = load_pretrained(copy.deepcopy(network), checkpoint, required=True) if checkpoint else copy.deepcopy(network)
    reference = source_reference_area(source_labels, pixel_size_nm)
    load = LoadImaged("image", reader=EMVolumeReader(spacing=input_spacing_nm), ensure_channel_first=True, image_only=True)
    loaded = [load({"image": str(path)}) for path in target_images]  # read once, resampled for each candidate

    def candidate(factor: float) -> dict:
        size = pixel_size_nm * factor
        volumes = [_resampled(item, size, max_sections if spatial_dims == 2 else None) for item in loaded]
        model = copy.deepcopy(trained).to(device)
        if batch_norm_from_target:
            windows = torch.cat([grid_windows(v, roi_size, BATCH_NORM_WINDOWS // len(volumes) or 1) for v in volumes])
            adapt_batchnorm(model, torch.split(windows, sw_batch_size), device)
        predictor = VolumePredictor(model, spatial_dims, roi_size, sw_batch_size=sw_batch_size, device=device, amp=amp)
        masks = [predictor(v) > 0.5 for v in volumes]
        areas = np.concatenate([section_object_areas(m) for m in masks])
        typical = typical_area(areas)
        return {
            "factor": float(factor),
            "pixel_size_nm": float(size),
            "typical_area_px": typical,
            "objects": int(areas.size),
            "foreground": float(sum(m.sum() for m in masks) / sum(m.size for m in masks)),
            "score": abs(float(np.log(typical / reference))) if typical > 0 else float("inf"),
        }

    ordered = sorted(float(f) for f in factors)
    if side == "both":
        candidates = [candidate(f) for f in ordered]
    else:  # the training size's own prediction says whether target objects look smaller or larger
        start = min(ordered, key=lambda f: abs(np.log(f)))
        first = candidate(start)
        typical = first["typical_area_px"]
        if typical == 0:  # nothing found at the training size: no side to prefer
            rest = [f for f in ordered if f != start]
        elif typical < reference:  # objects look smaller than the source's: magnify
            rest = [f for f in ordered if f < start]
        elif typical > reference:
            rest = [f for f in ordered if f > start]
        else:
            rest = []
        candidates = sorted([first, *(candidate(f) for f in rest)], key=lambda c: c["factor"])
    best = min(candidates, key=lambda c: (c["score"], abs(np.log(c["factor"]))))
    if best["factor"] in (ordered[0], ordered[-1]) and len(ordered) > 1:
        logger.warning("scale matching chose %.3g nm, the edge of the candidate range; the best size may lie beyond it", best["pixel_size_nm"])
    logger.info("scale matching: target pixel size %.3g nm (factor %.3g of %.3g nm)", best["pixel_size_nm"], best["factor"], pixel_size_nm)
    result = {"pixel_size_nm": best["pixel_size_nm"], "factor": best["factor"], "reference_area_px": reference, "candidates": candidates}
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
    return result
