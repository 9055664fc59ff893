"""PNG figures people look at: prediction/ground-truth overlays on EM sections."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from custom.utils.io import atomic_path


def pick_sections(n_sections: int, count: int) -> list[int]:
    """``count`` section indices spread evenly over a stack of ``n_sections``."""
    return sorted({int(round(i)) for i in np.linspace(0, n_sections - 1, min(count, n_sections))})


def save_overlay_png(
    path: str | os.PathLike,
    image: np.ndarray,
    masks: dict[str, np.ndarray],
    sections: Sequence[int] | None = None,
    title: str = "",
) -> Path:
    """Save a grid: one row per section, one column per mask drawn in colour over the grey image.

    ``image`` and every mask are (Z, Y, X); ``masks`` maps a column title (e.g. "prediction",
    "ground truth") to a binary array.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = list(sections) if sections is not None else pick_sections(image.shape[0], 3)
    cols = max(1, len(masks))
    fig, axes = plt.subplots(len(sections), cols, figsize=(4 * cols, 4 * len(sections)), squeeze=False)
    lo, hi = np.percentile(image, (1, 99))
    for row, z in enumerate(sections):
        for col, (name, mask) in enumerate(masks.items()):
            ax = axes[row][col]
            ax.imshow(image[z], cmap="gray", vmin=lo, vmax=hi)
            ax.imshow(np.ma.masked_equal(np.asarray(mask[z]).astype(np.uint8), 0), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
            ax.set_title(f"{name}, z={z}", fontsize=9)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(path)
