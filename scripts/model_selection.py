"""Does the label-free selection score rank trained models like their true target IoU does?

    python scripts/model_selection.py rank runs/source_only runs/coral runs/mmd --dataset_dir data/prepared/vnc_to_fafb

Each run folder is a bundle root with ``models/model.pt`` and ``eval/metrics.json`` (from
evaluate.json). The score (mean softmax entropy on patches of the unlabelled target training
region) is computed through the bundle's own inference preprocessing; the Spearman correlation
between -entropy and IoU says how far the score can be trusted for choosing a method or checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import fire
import torch
from monai.bundle import ConfigParser
from monai.transforms import RandSpatialCropSamples

from custom.data import load_datalist
from custom.engines import load_pretrained
from custom.metrics import mean_prediction_entropy, spearman

INFERENCE = Path(__file__).resolve().parents[1] / "bundles" / "em_mitochondria" / "configs" / "inference.json"


def _target_patches(parser: ConfigParser, dataset_dir: str, patches: int, size: int) -> list[torch.Tensor]:
    preprocessing = parser.get_parsed_content("preprocessing")
    sampler = RandSpatialCropSamples((1, size, size), num_samples=patches, random_size=False)
    sampler.set_random_state(0)
    batches = []
    for entry in load_datalist(dataset_dir, "target_training"):
        image = preprocessing({"image": entry["image"]})["image"].as_tensor()
        batches += [p[:, 0][None] for p in sampler(image)]
    return batches


def rank(*roots: str, dataset_dir: str, patches: int = 32, size: int = 256, out: str | None = None) -> None:
    """Entropy score and true target IoU of each run, and their rank correlation."""
    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser.update({"dataset_dir": dataset_dir, "device": "$torch.device('cpu')"})
    batches = _target_patches(parser, dataset_dir, patches, size)
    rows = []
    for root in roots:
        network = load_pretrained(parser.get_parsed_content("network_def", instantiate=True, lazy=False), Path(root) / "models" / "model.pt")
        iou = json.loads((Path(root) / "eval" / "metrics.json").read_text())["metrics"]["iou"]
        rows.append({"run": Path(root).name, "target_entropy": mean_prediction_entropy(network, batches), "target_test_iou": iou})
    rho = spearman([-r["target_entropy"] for r in rows], [r["target_test_iou"] for r in rows]) if len(rows) > 2 else float("nan")
    for r in sorted(rows, key=lambda r: r["target_entropy"]):
        print(f"{r['run']:<50} entropy {r['target_entropy']:.4f}   target IoU {r['target_test_iou']:.3f}")
    print(f"Spearman(-entropy, IoU) = {rho:.2f} over {len(rows)} runs")
    result = {"rows": rows, "spearman": rho}
    if out:
        Path(out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    fire.Fire({"rank": rank})
