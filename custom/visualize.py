"""PNG figures people look at: predictions over EM sections, errors in colour, at full resolution."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from custom.utils.io import atomic_path

TRUE_POSITIVE = (0.1, 0.85, 0.2)  # green
FALSE_POSITIVE = (0.95, 0.1, 0.6)  # magenta
FALSE_NEGATIVE = (0.15, 0.45, 1.0)  # blue
PREDICTED = (1.0, 0.85, 0.0)  # yellow: a prediction without ground truth
LEGEND = "green: true positive · magenta: false positive · blue: false negative"


def pick_sections(n_sections: int, count: int) -> list[int]:
    """``count`` section indices spread evenly over a stack of ``n_sections``."""
    return sorted({int(round(i)) for i in np.linspace(0, n_sections - 1, min(count, n_sections))})


def crop_box(mask: np.ndarray, size: int) -> tuple[slice, slice]:
    """A ``size`` × ``size`` window (clipped to the section) holding as much of the 2D ``mask``'s
    foreground as any such window: the part of a section where there is something to see."""
    h, w = mask.shape
    sy, sx = min(size, h), min(size, w)
    counts = np.pad(np.asarray(mask, np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = counts[sy:, sx:] - counts[:-sy, sx:] - counts[sy:, :-sx] + counts[:-sy, :-sx]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return slice(y, y + sy), slice(x, x + sx)


def error_colours(prediction: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    """RGBA (…, 4) float image: true positives, false positives and false negatives in their colours
    (only the prediction, in yellow, without ``truth``); transparent elsewhere."""
    prediction = np.asarray(prediction, bool)
    rgba = np.zeros((*prediction.shape, 4))
    if truth is None:
        layers = [(prediction, PREDICTED)]
    else:
        truth = np.asarray(truth, bool)
        layers = [(prediction & truth, TRUE_POSITIVE), (prediction & ~truth, FALSE_POSITIVE), (~prediction & truth, FALSE_NEGATIVE)]
    for where, colour in layers:
        rgba[where] = (*colour, 1.0)
    return rgba


def save_overlay_png(
    path: str | os.PathLike,
    image: np.ndarray,
    predictions: dict[str, np.ndarray],
    truth: np.ndarray | None = None,
    sections: Sequence[int] | None = None,
    title: str = "",
    crop: int = 256,
) -> Path:
    """Save one row per section: the raw crop, then each prediction's errors in colour over it.

    ``image``, every prediction and ``truth`` are (Z, Y, X). Each section shows a ``crop`` × ``crop``
    window at full resolution (one image pixel per figure pixel) placed where the ground truth (or
    else the first prediction) has the most foreground.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = list(sections) if sections is not None else pick_sections(image.shape[0], 3)
    reference = truth if truth is not None else next(iter(predictions.values()))
    boxes = [crop_box(np.asarray(reference[z]) > 0, crop) for z in sections]
    panel_h, panel_w = boxes[0][0].stop - boxes[0][0].start, boxes[0][1].stop - boxes[0][1].start
    cols, dpi = 1 + len(predictions), 100
    fig, axes = plt.subplots(
        len(sections), cols, figsize=(cols * (panel_w / dpi + 0.1), len(sections) * (panel_h / dpi + 0.35) + 0.5), squeeze=False, dpi=dpi
    )
    lo, hi = np.percentile(image, (1, 99))
    for row, (z, box) in enumerate(zip(sections, boxes)):
        raw = image[z][box]
        panels = [("image", None), *predictions.items()]
        for col, (name, mask) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(raw, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if mask is not None:
                ax.imshow(error_colours(np.asarray(mask[z])[box], None if truth is None else np.asarray(truth[z])[box]), alpha=0.5, interpolation="nearest")
            ax.set_title(f"{name}, z={z}", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{title}\n{LEGEND if truth is not None else 'yellow: predicted foreground'}" if title else LEGEND, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)
