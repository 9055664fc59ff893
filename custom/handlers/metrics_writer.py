"""Ignite handlers that write evaluation results people and scripts read."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from ignite.engine import Engine, Events

from custom.data.readers import read_volume
from custom.utils.io import atomic_path
from custom.visualize import pick_sections, save_overlay_png

logger = logging.getLogger(__name__)


class MetricsJSONWriter:
    """At the end of a run, write ``engine.state.metrics`` (scalars) plus ``extra`` fields as JSON.

    A metric that is 0/0 (precision when nothing is predicted, recall when nothing is labelled) is
    written as 0 and named in ``undefined_as_zero``, so readers get a number and the reason. The file
    is replaced atomically, so a crashed evaluation never leaves a truncated result.
    """

    def __init__(self, output_path: str, extra: dict | None = None) -> None:
        self.output_path = Path(output_path)
        self.extra = dict(extra or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        metrics, undefined = {}, []
        for name, value in engine.state.metrics.items():
            value = float(np.asarray(value).mean()) if np.ndim(value) else float(value)
            if math.isnan(value):
                undefined.append(name)
            metrics[name] = 0.0 if math.isnan(value) else value
        payload = {"metrics": metrics, **({"undefined_as_zero": undefined} if undefined else {}), **self.extra}
        with atomic_path(self.output_path) as tmp:
            tmp.write_text(json.dumps(payload, indent=2))
        logger.info("wrote %s", self.output_path)


class OverlaySaver:
    """After each evaluated volume, save a PNG of a few sections: the prediction's errors against the ground truth.

    Reads the original image from the file named in the prediction's metadata (so the overlay is on
    the raw, un-normalised data) and expects ``pred`` (one-hot or probabilities, channel 1 =
    foreground) and ``label`` on the original grid, as produced by ``Invertd``.
    """

    def __init__(self, output_dir: str, n_sections: int = 3, pred_key: str = "pred", label_key: str = "label") -> None:
        self.output_dir = Path(output_dir)
        self.n_sections = n_sections
        self.pred_key, self.label_key = pred_key, label_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        for item in engine.state.output:
            pred = item[self.pred_key]
            name = Path(str(pred.meta["filename_or_obj"]))
            image, _ = read_volume(name)
            truth = np.asarray(item[self.label_key][-1].cpu()) > 0.5 if self.label_key in item else None
            stem = name.name.split(".")[0]
            save_overlay_png(
                self.output_dir / f"{stem}_overlay.png", image, {"prediction": np.asarray(pred[1].cpu()) > 0.5}, truth,
                pick_sections(image.shape[0], self.n_sections), stem,
            )
