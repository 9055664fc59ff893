"""The fine-tuning study serves only cells and models made at the data's current domain pixel sizes."""

import json
import subprocess
import sys

from custom.data.datasets import mito_pair_spacing_nm

from .conftest import REPO_ROOT

SPACING = mito_pair_spacing_nm()
STUDY = str(REPO_ROOT / "scripts" / "finetune_study.py")


def _write_cell(runs_dir, variant, seed, iou, spacing):
    cell = {"variant": variant, "factor": variant, "value": variant, "seed": seed, "budget": {"name": "cpu"}, "metrics": {"miou": iou, "mdice": iou, "iou": iou}}
    if spacing is not None:
        cell["spacing_nm"] = spacing
    path = runs_dir / variant / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cell))


def test_report_leaves_out_cells_made_at_other_pixel_sizes(tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    _write_cell(runs_dir, "baseline", 0, 0.64, None)  # made before pixel sizes were recorded
    cmd = [sys.executable, STUDY, "report", f"--runs_dir={runs_dir}", f"--out={out}"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode != 0 and "no cached runs at the current domain pixel sizes" in result.stderr
    assert not out.exists()
    _write_cell(runs_dir, "sgd", 0, 0.70, SPACING)
    _write_cell(runs_dir, "loss_ce", 0, 0.55, {**SPACING, "fafb": [40.0, 4.0, 4.0]})
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=True)
    assert "2 cached runs" in result.stdout and "left out" in result.stdout
    assert [r["variant"] for r in json.loads((out / "finetune_study.json").read_text())["rows"]] == ["sgd"]


def test_run_refuses_a_model_folder_of_unknown_pixel_sizes_before_preparing(tmp_path):
    models = tmp_path / "work" / "cpu"
    (models / "source").mkdir(parents=True)  # models from before pixel sizes were recorded
    cmd = [sys.executable, STUDY, "run", "--variants=baseline", f"--work_dir={tmp_path / 'work'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode != 0 and "holds models of unknown domain pixel sizes" in result.stderr
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["cpu"]  # nothing prepared
