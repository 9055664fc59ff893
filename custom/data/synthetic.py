"""A small EM-like domain pair for the demo and fast tests.

One scene model (cells with dark membranes, mitochondria with a double membrane and cristae,
vesicles as distractors) is imaged by two "microscopes" that differ in contrast, gamma, noise,
blur and pixel size, so a model trained on the source sees a real domain shift on the target.
The label is either the mitochondria or the cell membranes (``STRUCTURES``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class Microscope:
    """Imaging conditions: pixel/section size in nm and the intensity transfer applied to a scene."""

    pixel_size_nm: float
    section_nm: float = 40.0
    contrast: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    noise: float = 0.04
    blur_nm: float = 4.0


SOURCE_MICROSCOPE = Microscope(pixel_size_nm=5.0, contrast=1.0, brightness=0.0, gamma=1.0, noise=0.04, blur_nm=4.0)
TARGET_MICROSCOPE = Microscope(pixel_size_nm=6.5, contrast=0.55, brightness=0.12, gamma=1.6, noise=0.12, blur_nm=11.0)
STRUCTURES = ("mitochondria", "membranes")

# Width (nm) of the dark membrane band between cells. In the membrane data set, labelled area /
# skeleton length is ~40 nm, as in the membrane annotations of Drosophila VNC stack 1 (38-40 nm by
# the same measure); the mitochondria scene keeps the thin band its documented results were measured on.
MEMBRANE_NM = {"mitochondria": 9.0, "membranes": 22.0}


def shifted_target(strength: float) -> Microscope:
    """``TARGET_MICROSCOPE`` moved towards ``SOURCE_MICROSCOPE``: every imaging parameter interpolated
    linearly, ``strength`` 1 = the target microscope, 0 = the source one (a milder domain shift)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"shift strength must lie in [0, 1], got {strength}.")
    values = {f.name: (1 - strength) * getattr(SOURCE_MICROSCOPE, f.name) + strength * getattr(TARGET_MICROSCOPE, f.name) for f in fields(Microscope)}
    return Microscope(**values)


def _membrane_width(structure: str) -> float:
    """Membrane band width (nm) of the scene rendered for ``structure``; unknown structures are refused."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}.")
    return MEMBRANE_NM[structure]


def _mitochondria(rng: np.random.Generator, extent_nm: float, depth_nm: float, count: int) -> list[dict]:
    """Random ellipsoid-like organelles: centre, semi-axes (nm), in-plane angle and cristae period."""
    return [
        {
            "c": rng.uniform(0, extent_nm, 2),
            "cz": rng.uniform(-0.2, 1.2) * depth_nm,
            "a": rng.uniform(110, 260),
            "b": rng.uniform(70, 130),
            "rz": rng.uniform(200, 500),
            "theta": rng.uniform(0, np.pi),
            "period": rng.uniform(45, 70),
        }
        for _ in range(count)
    ]


def _section(
    z_nm: float, coords: np.ndarray, cells: cKDTree, mitos: list[dict], vesicles: np.ndarray, texture: np.ndarray, membrane_nm: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one section of the scene: (intensity in [0, 1], {structure: mask}); membranes ``membrane_nm`` wide."""
    yy, xx = coords
    image = 0.62 + texture
    d, _ = cells.query(np.stack([yy.ravel(), xx.ravel()], 1), k=2)
    membrane = (d[:, 1] - d[:, 0] < membrane_nm).reshape(yy.shape)
    image[membrane] -= 0.38
    for cz, cy, cx, r in vesicles:
        ring = np.abs(np.hypot(yy - cy, xx - cx) - r * np.sqrt(max(0.0, 1 - ((z_nm - cz) / r) ** 2))) < 4.0
        image[ring & (abs(z_nm - cz) < r)] -= 0.3
    label = np.zeros(yy.shape, np.uint8)
    for m in mitos:
        scale = 1 - ((z_nm - m["cz"]) / m["rz"]) ** 2
        if scale <= 0.05:
            continue
        a, b = m["a"] * np.sqrt(scale), m["b"] * np.sqrt(scale)
        dy, dx = yy - m["c"][0], xx - m["c"][1]
        u = dx * np.cos(m["theta"]) + dy * np.sin(m["theta"])
        v = -dx * np.sin(m["theta"]) + dy * np.cos(m["theta"])
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        inside = r <= 1.0
        if not inside.any():
            continue
        image[inside] = 0.42 + 0.5 * texture[inside]
        cristae = inside & (np.cos(2 * np.pi * u / m["period"]) > 0.55) & (r < 0.8)
        image[cristae] -= 0.14
        image[inside & (r > 1.0 - 14.0 / b)] = 0.2
        label[inside] = 1
    return image, {"mitochondria": label, "membranes": membrane.astype(np.uint8)}


def _image(scene: np.ndarray, microscope: Microscope, rng: np.random.Generator) -> np.ndarray:
    """Apply a microscope's blur, contrast, gamma and noise to a scene in [0, 1]; returns uint8."""
    sigma = microscope.blur_nm / microscope.pixel_size_nm
    image = ndimage.gaussian_filter(scene, sigma=(0, sigma, sigma))
    image = np.clip(microscope.contrast * (image - 0.5) + 0.5 + microscope.brightness, 0, 1) ** microscope.gamma
    image = image + rng.normal(0, microscope.noise, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def synthesize_volume(
    microscope: Microscope, n_sections: int = 8, extent_nm: float = 1600.0, seed: int = 0, structure: str = "mitochondria"
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Render a synthetic EM volume: (uint8 image, uint8 mask of ``structure``, spacing (z, y, x) nm).

    The scene (cells, mitochondria, vesicles) depends on ``seed`` and ``extent_nm`` only; the
    microscope sets the pixel size, section thickness and intensity transfer. ``structure`` is one
    of ``STRUCTURES``: mitochondria, or the cell membranes (ISBI 2012 style boundary labels); it
    also sets the membrane width (``MEMBRANE_NM``).
    """
    membrane_nm = _membrane_width(structure)
    rng = np.random.default_rng(seed)
    depth = n_sections * microscope.section_nm
    n_px = int(round(extent_nm / microscope.pixel_size_nm))
    axis = (np.arange(n_px) + 0.5) * microscope.pixel_size_nm
    coords = np.stack(np.meshgrid(axis, axis, indexing="ij"))
    cells = cKDTree(rng.uniform(0, extent_nm, (max(4, int(extent_nm**2 / 4e5)), 2)))
    mitos = _mitochondria(rng, extent_nm, depth, count=max(3, int(extent_nm**2 / 1.6e5)))
    n_ves = int(extent_nm**2 / 4e4)
    vesicles = np.column_stack([rng.uniform(0, depth, n_ves), rng.uniform(0, extent_nm, (n_ves, 2)), rng.uniform(15, 30, n_ves)])
    texture_sigma = 12.0 / microscope.pixel_size_nm
    scenes, labels = [], []
    for z in range(n_sections):
        texture = ndimage.gaussian_filter(rng.normal(0, 1, (n_px, n_px)), texture_sigma) * 0.35
        scene, masks = _section((z + 0.5) * microscope.section_nm, coords, cells, mitos, vesicles, texture, membrane_nm)
        scenes.append(scene)
        labels.append(masks[structure])
    image = _image(np.clip(np.stack(scenes), 0, 1), microscope, rng)
    spacing = (microscope.section_nm, microscope.pixel_size_nm, microscope.pixel_size_nm)
    return image, np.stack(labels), spacing


def ensure_synthetic_dataset(
    root: str | os.PathLike, n_sections: int = 6, extent_nm: float = 1600.0, seed: int = 0, structure: str = "mitochondria", shift: float = 1.0
) -> str:
    """Create a synthetic source/target pair in the prepared-dataset layout; return its folder.

    The source is imaged with ``SOURCE_MICROSCOPE``, the target (a different scene) with
    ``shifted_target(shift)`` (``TARGET_MICROSCOPE`` at the default 1). Regions and the datalist
    follow ``custom.data.datalist``, so the bundle treats it exactly like prepared real data; the
    labels are those of ``structure``. A complete earlier output is reused only if it was made with
    the same parameters (``synthetic.json``, written last); otherwise, e.g. another structure in the
    same folder, it is generated again.
    """
    from custom.utils import atomic_path

    from .datalist import write_direction_datalist, write_domain

    root = Path(root)
    target = shifted_target(shift)
    spec = {
        "structure": structure,
        "n_sections": n_sections,
        "extent_nm": extent_nm,
        "seed": seed,
        "membrane_nm": _membrane_width(structure),
        "source": asdict(SOURCE_MICROSCOPE),
        "target": asdict(target),
    }
    spec_path = root / "synthetic.json"
    if (root / "datalist.json").exists() and spec_path.exists() and json.loads(spec_path.read_text()) == spec:
        return str(root)
    for name, microscope, offset in (("source", SOURCE_MICROSCOPE, 0), ("target", target, 1)):
        image, label, spacing = synthesize_volume(microscope, n_sections, extent_nm, seed + offset, structure)
        write_domain(root / "volumes" / name, image, label, spacing, overwrite=True)
    write_direction_datalist(root, root / "volumes" / "source", root / "volumes" / "target", name=f"synthetic_{structure}")
    with atomic_path(spec_path) as tmp:
        tmp.write_text(json.dumps(spec, indent=1))
    return str(root)
