"""The DA benchmark report: tables, gap closed and the diagnosis are computed from the cached runs,
which (like finished trainings) are served only while they match what their row runs now."""

import importlib.util
import json
import subprocess
import sys

import pytest
from custom.data.datasets import mito_pair_spacing_nm

from .conftest import REPO_ROOT

SPACING = mito_pair_spacing_nm()  # cells made at other domain pixel sizes are left out of the report
BEST = "tent_balanced_consistency"  # scripts/benchmark_da.py BEST_UDA: the row declared best without target labels


def _write_run(runs_dir, row, seed, iou, precision, recall, start_iou=None, scale_match=None, spacing=SPACING, budget=None, budget_name="cpu"):
    metrics = {"iou": iou, "dice": 2 * iou / (1 + iou), "precision": precision, "recall": recall}
    path = runs_dir / budget_name / "vnc_to_fafb" / row / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    start = {**metrics, "iou": start_iou} if start_iou is not None else None
    run = {"direction": "vnc_to_fafb", "row": row, "seed": seed, "metrics_last": metrics, "metrics_source_val_selected": metrics, "metrics_start": start, "spacing_nm": spacing}
    if budget is not None:
        run["budget"] = budget
    if scale_match is not None:
        run["scale_match"] = {"pixel_size_nm": scale_match, "factor": scale_match / 10.0}
    path.write_text(json.dumps(run))


def test_report_computes_gap_and_explains_rows_below_source_only(tmp_path):
    runs_dir = tmp_path / "runs"
    for seed, shift in enumerate((-0.05, 0.05)):
        _write_run(runs_dir, "source_only", seed, 0.40 + shift, 0.50, 0.60)
        _write_run(runs_dir, "oracle", seed, 0.80, 0.90, 0.85)
        _write_run(runs_dir, "mmd", seed, 0.30, 0.70, 0.35)  # under-segments: predicted/true = 0.5
        _write_run(runs_dir, "coral", seed, 0.62, 0.50, 0.70)  # over-segments: 1.4
        _write_run(runs_dir, BEST, seed, 0.45, 0.60, 0.60)
        _write_run(runs_dir, "tent", seed, 0.45, 0.60, 0.60)  # an alignment row: predicted/true 1.0
        _write_run(runs_dir, "class_mmd", seed, 0.42, 0.55, 0.66, start_iou=0.30 + 0.02 * seed)  # 1.2
        _write_run(runs_dir, "scale_match", seed, 0.41, 0.60, 0.60, scale_match=(3.54, 4.2)[seed])
        _write_run(runs_dir, "ft_100", seed, 0.85, 0.90, 0.90)  # target labels, better than the oracle
        _write_run(runs_dir, "dann", seed, 0.70, 0.80, 0.80, spacing={**SPACING, "fafb": [40.0, 4.0, 4.0]})  # made at other pixel sizes
        _write_run(runs_dir, "two_stream", seed, 0.10, 0.80, 0.20)  # made before the two-stream fix (no revisions recorded)
        _write_run(runs_dir, "oracle", seed + 2, 0.50, 0.90, 0.85, budget={"max_epochs": 20})  # trained half as long as the oracle now is
    choice = {"budget": {"name": "development", "max_epochs": 20, "iterations_per_epoch": 20}, "seeds": [0], "target_test_iou": {"source_only": {"mean": 0.1}, BEST: {"mean": 0.9}}, "best_uda": BEST}
    choice["target_test_predicted_to_true_foreground"] = {"source_only": 0.4, BEST: 1.0}  # source-only under-segments the synthetic target
    (tmp_path / "da_synthetic_choice.json").write_text(json.dumps(choice))
    (tmp_path / "da_label_stats.json").write_text(json.dumps({"vnc_to_fafb": {"training": 0.05, "target_training": 0.10}}))
    breakdown = {"fn_missed_objects": 0.75, "fn_boundary": 0.2, "fp_boundary": 0.5, "fp_false_objects": 0.25, "missed_objects": 0.4, "false_objects": 0.1}
    errors = {"direction": "vnc_to_fafb", "seed": 0, "boundary_px": 5, "missed_coverage": 0.2, "models": {"coral": {"iou": 0.6, **breakdown, "true_objects": 50.0, "predicted_objects": 40.0}}}
    (tmp_path / "da_errors_vnc_to_fafb.json").write_text(json.dumps(errors))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_da.py"), "report", f"--runs_dir={runs_dir}", f"--out={out}", "--docs=False"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT)

    summary = json.loads((out / "da_benchmark.json").read_text())
    assert summary["declared_uda"] == BEST and "class_mmd" in summary["exploratory_rows"] and "coral" not in summary["exploratory_rows"]
    table = summary["table"]["vnc_to_fafb"]
    assert "dann" not in table  # cached at other domain pixel sizes: left out, not mixed in
    assert "two_stream" not in table  # made with an earlier revision of the method: left out
    assert table["oracle"]["seeds"] == [0, 1]  # seeds 2 and 3 trained for fewer epochs than the row now trains: left out
    assert table["coral"]["gap_closed"] == pytest.approx(0.55)
    assert table["source_only"]["iou"]["std"] > 0.07  # sample std of 0.35 and 0.45
    text = (out / "da_benchmark.md").read_text()
    assert f"chosen without target labels: {BEST}, 12 % of the gap (does not meet the ≥ 50 % goal)" in text
    assert "(per seed, against that seed's own bounds: 22 / 0 %, mean 11 %)" in text  # 0.10 / 0.45 and 0.00 / 0.35
    assert f"budget development: 20 × 20 iterations, seeds [0]), target-test IoU: source_only 0.100, {BEST} 0.900; best {BEST}, as declared." in text
    assert "Exploratory rows (*, 1; not candidates for the label-free choice): best on the test labels (optimistic) class_mmd, 5 % of the gap over 2 seed(s)." in text
    assert "| class_mmd | uda* | 2 |" in text and "all rows have" not in text
    assert text.index("## Appendix: exploratory rows, VNC → FAFB") < text.index("| class_mmd | uda* | 2 |")  # out of the main table
    # the main table: bounds, baselines, seed methods, the declared row, fine-tuning; the grid's other rows after it
    assert text.index("| coral | uda | 2 |") < text.index("## Status") < text.index("## Appendix: the grid's other rows, VNC → FAFB") < text.index("| scale_match | uda | 2 |")
    coral_line = next(line for line in text.splitlines() if line.startswith("| coral |"))
    mmd_line = next(line for line in text.splitlines() if line.startswith("| mmd |"))
    assert coral_line.endswith("| 55 % | +0.220 ± 0.071 (2/2) |") and mmd_line.endswith("| -0.100 ± 0.071 (0/2) |")
    assert "best unsupervised row on the test labels (optimistic): coral, 55 % of the gap (meets the ≥ 50 % goal)" in text
    assert "1 of 6 unsupervised rows below source-only (predicted/true foreground 1.20): mmd (paired IoU -0.100, predicted/true foreground 0.50)" in text
    assert "5.0 % of the source training pixels, 10.0 % of the target training region" in text
    assert "2 of the 3 alignment rows (tent, mmd, coral) move that way: tent, mmd." in text  # tent: 1.0 < 1.2
    assert "IoU 0.420 (predicted/true foreground 1.20) vs 0.300 (0.50) for MMD of the whole distribution." in text
    assert "class_mmd 0.310 → 0.420 (paired gain +0.110 ± 0.014, 22 % of the gap from its start to the oracle; its source_only row: 0.400)" in text
    assert table["class_mmd"]["gap_closed_from_start"] == pytest.approx(0.11 / 0.49)
    assert (
        "- VNC → FAFB, coral (seed 0, IoU 0.600): false negatives 75 % in missed mitochondria (40 % of 50 missed), 20 % at boundaries; "
        "false positives 50 % at boundaries, 25 % in false objects (10 % of 40 predicted)." in text
    )
    assert "- VNC → FAFB, scale_match: 3.54, 4.2" in text
    assert f"ft_100 (with target labels, IoU 0.850) beats the oracle (0.800); taken as the upper bound instead, {BEST} closes 11 % of the gap." in text
    assert "scores below ft_100 by more than its seed spread: it is under-trained here" in text
    assert "not distinguishable" not in text  # mmd is 0.100 below, outside the ± 0.071 seed spread
    # the pair the choice is made on against the real one: source-only errs the other way there
    assert "| source_only | 0.40 (IoU 0.100) | 1.20 (IoU 0.400) |" in text
    assert f"| {BEST} (declared) | 1.00 (IoU 0.900) | 1.00 (IoU 0.450) |" in text
    assert "| coral (best on test labels VNC → FAFB) | – | 1.40 (IoU 0.620) |" in text
    assert "Source-only under-segments the synthetic target (0.40); VNC → FAFB it over-segments (1.20)." in text
    assert "rows that add the foreground source-only misses, where this target needs rows that remove its false foreground" in text
    assert (out / "da_benchmark.png").stat().st_size > 0


def test_report_of_the_long_budget_counts_its_own_grid_and_keeps_the_main_report(tmp_path):
    runs_dir = tmp_path / "runs"
    _write_run(runs_dir, "source_only", 0, 0.60, 0.70, 0.80, budget_name="cpu_long")
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_da.py"), "report", "--budget=cpu_long", f"--runs_dir={runs_dir}", f"--out={tmp_path}", "--docs=False"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    text = (tmp_path / "da_benchmark_cpu_long.md").read_text()
    assert "- VNC → FAFB: 15 of 15 rows have fewer than 3 seeds" in text  # the long grid (LONG_ROWS), not the main one
    assert "100 epochs × 20 iterations" in text and not (tmp_path / "da_benchmark.md").exists()


def test_overlay_without_its_models_leaves_the_existing_figure(tmp_path):
    figure = tmp_path / "da_overlay_vnc_to_fafb.png"
    figure.write_bytes(b"committed figure")
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_da.py"), "overlay", "--direction=vnc_to_fafb", f"--work_dir={tmp_path / 'no_models'}", f"--out={tmp_path}"]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    assert "left as it is" in result.stdout
    assert figure.read_bytes() == b"committed figure"


def test_overlay_of_another_budget_names_its_own_figure(tmp_path):
    """A run under cpu_fair or cpu_long draws its own overlay; the main (cpu) report's figure is not its to replace."""
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_da.py"), "overlay", "--direction=vnc_to_fafb", "--budget=cpu_long"]
    result = subprocess.run([*cmd, f"--work_dir={tmp_path / 'no_models'}", f"--out={tmp_path}"], check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    assert f"{tmp_path / 'da_overlay_vnc_to_fafb_cpu_long.png'} left as it is" in result.stdout


def test_run_refuses_models_trained_at_other_pixel_sizes_before_preparing_anything(tmp_path):
    models = tmp_path / "work" / "cpu"
    models.mkdir(parents=True)
    (models / "spacing_nm.json").write_text(json.dumps({**SPACING, "fafb": [40.0, 4.0, 4.0]}))
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_da.py"), "run", "--rows=source_only", f"--work_dir={tmp_path / 'work'}", f"--runs_dir={tmp_path / 'runs'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode != 0 and "were trained with domain pixel sizes" in result.stderr and "--work-dir" in result.stderr
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["cpu"]  # nothing prepared, nothing trained
    synthetic = subprocess.run([*cmd, "--budget=development"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert synthetic.returncode != 0 and "use `choose --budget development`" in synthetic.stderr  # a synthetic-pair budget
    (models / "spacing_nm.json").unlink()
    (models / "vnc_to_fafb").mkdir()  # models from before pixel sizes were recorded: refused too
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode != 0 and "holds models of unknown domain pixel sizes" in result.stderr


def _benchmark_module(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))  # as when run as a script: its sibling modules import
    spec = importlib.util.spec_from_file_location("benchmark_da", REPO_ROOT / "scripts" / "benchmark_da.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "benchmark_da", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_finished_training_of_other_epochs_is_refused_not_reused(tmp_path, monkeypatch):
    bench_da = _benchmark_module(monkeypatch)
    bench = bench_da.Benchmark(tmp_path / "data", tmp_path / "work", tmp_path / "runs", "synthetic", "cpu", 1)
    for name in ("source_only", "oracle"):
        root = bench.run_root("synthetic", bench_da.ROW_BY_NAME[name], 0)
        root.mkdir(parents=True)
        (root / bench_da.TRAINED_MARKER).write_text("0123abcd")  # finished before epochs were recorded: the budget's 6
    source_only = bench._checkpoint("synthetic", bench_da.ROW_BY_NAME["source_only"], 0)
    assert source_only == bench.last_model("synthetic", bench_da.ROW_BY_NAME["source_only"], 0)  # its row still trains 6
    with pytest.raises(SystemExit, match="holds a finished training of 6 epochs, but oracle now trains 12"):
        bench._checkpoint("synthetic", bench_da.ROW_BY_NAME["oracle"], 0)


def test_a_row_above_the_oracle_within_its_seed_spread_is_not_called_a_sign_of_under_training(monkeypatch):
    bench_da = _benchmark_module(monkeypatch)
    cell = lambda iou, std, gap: {"n_seeds": 3, "iou": {"mean": iou, "std": std}, "gap_closed": gap}  # noqa: E731
    table = {"fafb_to_vnc": {"source_only": cell(0.25, 0.1, 0.0), "oracle": cell(0.675, 0.057, 1.0), "ft_100": cell(0.684, 0.006, 1.02)}}
    text = "\n".join(bench_da._status(table))
    assert "ft_100 scores above the oracle's mean, within its seed spread (± 0.057)." in text
    assert "under-trained" not in text


def test_seed_methods_at_each_budget_are_paired_with_the_baseline_of_equal_training(monkeypatch):
    bench_da = _benchmark_module(monkeypatch)
    assert bench_da.equal_training_baseline("cpu") == "source_only" and bench_da.equal_training_baseline("cpu_long") == "source_only_continued"
    cpu = {"baseline": "source_only", "baseline_iou": 0.5, "equal_training": True}
    effects = {
        "cpu": {"vnc_to_fafb": {**cpu, "rows": {"oracle": [0.3, 0.2, 0.25], "mmd": [0.05, 0.01, 0.02], "coral": [-0.02, -0.01, 0.0]}},
                "fafb_to_vnc": {**cpu, "rows": {"oracle": [0.4, 0.4, 0.4], "mmd": [0.02, 0.03, 0.01], "coral": [0.1, 0.2, 0.1]}}},
        "cpu_long": {"vnc_to_fafb": {"baseline": "source_only", "baseline_iou": 0.6, "equal_training": False, "rows": {"oracle": [0.2], "mmd": [-0.01]}}},
        "gpu": {d: {**cpu, "rows": {"mmd": [0.1, 0.1, 0.1], "coral": [0.1]}} for d in ("vnc_to_fafb", "fafb_to_vnc")},  # coral has 1 seed so far
    }  # fmt: skip
    lines = bench_da.budget_effect_lines(effects)
    assert "| cpu | VNC → FAFB | source_only (0.500) | +0.25 ± 0.05 (3/3) | +0.03 ± 0.02 (3/3) | -0.01 ± 0.01 (0/3) | – | – | – |" in lines
    assert "| cpu_long | VNC → FAFB | source_only (0.600), **shorter training** | +0.20 (1/1) | -0.01 (0/1) | – | – | – | – |" in lines
    verdicts = [line for line in lines if line.startswith("- ")]
    assert verdicts[0] == "- `cpu` (3 seeds, 2 of 5 seed methods run): better on every seed, both directions: mmd; worse on every seed in a direction: none."
    assert verdicts[1] == (  # one seed: no verdict, however the sign falls
        "- `cpu_long` (1 seed, 0 of 5 seed methods run, vs source-only: source_only_continued not run yet): seed methods' Δ -0.01 to -0.01; "
        "no verdict before 3 seeds."
    )
    assert verdicts[2] == "- `gpu` (1–3 seeds, 2 of 5 seed methods run): seed methods' Δ +0.10 to +0.10; no verdict before 3 seeds."
    assert "`cpu_long` 2000 iterations on the source-only model" in lines[0] and "(batches of 4 × 128² at 10 nm unless noted)" in lines[0]


def test_each_seed_method_is_also_shown_as_deployed_with_its_label_free_batch_norm_default(tmp_path, monkeypatch):
    bench_da = _benchmark_module(monkeypatch)
    modes = {"methods": {"coral": {"default": "separate + AdaBN at test"}, "mmd": {"default": "separate"}}}
    deployed = bench_da.deployed_variants(modes)
    assert deployed == {"mmd": "mmd", "coral": "coral_adabn", "dann": "dann", "ynet": "ynet", "two_stream": "two_stream"}
    runs_dir = tmp_path / "runs"
    for seed in range(3):
        for row, iou in (("source_only_continued", 0.5), ("mmd", 0.52), ("coral", 0.48), ("coral_adabn", 0.55)):
            _write_run(runs_dir, row, seed, iou, 0.5, 0.6, budget_name="cpu_fair")
    rows = bench_da.budget_effects(runs_dir, deployed=deployed)["cpu_fair"]["vnc_to_fafb"]["rows"]
    assert rows["coral_adabn"] == pytest.approx([0.05] * 3) and rows["coral"] == pytest.approx([-0.02] * 3)
    fair = {"baseline": "source_only_continued", "baseline_iou": 0.5, "equal_training": True}
    effects = {"cpu_fair": {d: {**fair, "rows": dict(rows)} for d in ("vnc_to_fafb", "fafb_to_vnc")}}
    lines = bench_da.budget_effect_lines(effects, deployed)
    assert "| cpu_fair | VNC → FAFB | source_only_continued (0.500) | – | +0.02 ± 0.00 (3/3) | -0.02 ± 0.00 (0/3) | – | – | – |" in lines
    assert "| cpu_fair, BN default | VNC → FAFB | same | same | +0.02 ± 0.00 (3/3) | +0.05 ± 0.00 (3/3) | – | – | – |" in lines
    assert "with the label-free BN defaults (coral_adabn), where cells exist." in lines[0]
    verdicts = [line for line in lines if line.startswith("- ")]
    assert verdicts == [
        "- `cpu_fair` (3 seeds, 2 of 5 seed methods run): better on every seed, both directions: mmd; worse on every seed in a direction: coral.",
        "- `cpu_fair`, BN default (3 seeds, 2 of 5 seed methods run): better on every seed, both directions: mmd, coral_adabn; worse on every seed in a direction: none.",
    ]
    assert not any("BN default" in line for line in bench_da.budget_effect_lines(effects))  # without defaults: as trained only


def test_the_equal_training_baseline_replaces_source_only_once_it_has_cells(tmp_path, monkeypatch):
    bench_da = _benchmark_module(monkeypatch)
    runs_dir = tmp_path / "runs"
    for seed, (low, continued, mmd) in enumerate(((0.40, 0.50, 0.55), (0.30, 0.45, 0.40))):
        for row, iou in (("source_only", low), ("mmd", mmd)):
            _write_run(runs_dir, row, seed, iou, 0.5, 0.6, budget_name="cpu_long")
    before = bench_da.budget_effects(runs_dir)["cpu_long"]["vnc_to_fafb"]
    assert before["baseline"] == "source_only" and not before["equal_training"] and before["rows"]["mmd"] == pytest.approx([0.15, 0.10])
    for seed, continued in enumerate((0.50, 0.45)):
        _write_run(runs_dir, "source_only_continued", seed, continued, 0.5, 0.6, budget_name="cpu_long")
    after = bench_da.budget_effects(runs_dir)["cpu_long"]["vnc_to_fafb"]
    assert after["baseline"] == "source_only_continued" and after["equal_training"] and after["rows"]["mmd"] == pytest.approx([0.05, -0.05])
    cells = bench_da.summarise(bench_da._load(runs_dir / "cpu_long"))["vnc_to_fafb"]
    lines = bench_da._table_lines(cells, cells["source_only"], cells["source_only_continued"])
    assert lines[0].endswith("| paired Δ IoU vs source_only_continued, equal training (seeds beating it) |")
    mmd = next(line for line in lines if line.startswith("| mmd |"))
    assert mmd.endswith("| +0.125 ± 0.035 (2/2) | +0.000 ± 0.071 (1/2) |")


def test_a_training_another_process_holds_is_refused_not_joined(tmp_path, monkeypatch):
    import fcntl

    _benchmark_module(monkeypatch)
    common = sys.modules["benchmark_common"]  # imported by the script, as when it runs
    root, trained = tmp_path / "run", []
    root.mkdir()
    with open(root / common.TRAINING_LOCK, "w") as held:  # as a second process training there would hold it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit, match="another process is training source_only there now"):
            common.train_once(root, "source_only", 6, lambda: trained.append(1))
    assert trained == [] and not (root / common.TRAINED_MARKER).exists()
    common.train_once(root, "source_only", 6, lambda: trained.append(1))  # released: it trains, once
    common.train_once(root, "source_only", 6, lambda: trained.append(1))
    assert trained == [1] and json.loads((root / common.TRAINED_MARKER).read_text())["epochs"] == 6
    with pytest.raises(SystemExit, match="holds a training of revision 1 of source_only's method, now 2"):
        common.train_once(root, "source_only", 6, lambda: trained.append(1), revision=2)  # the method's code changed since


def test_choose_ranks_cached_synthetic_cells_and_records_their_foreground_ratio(tmp_path):
    runs_dir = tmp_path / "results" / "runs"
    pair = "synthetic_shift0.75"  # the development pair (DEVELOPMENT_SHIFT)
    for row, iou, precision, recall in (("source_only", 0.4, 0.9, 0.45), ("consistency", 0.2, 0.95, 0.19), (BEST, 0.9, 0.9, 0.99)):
        path = runs_dir / "development" / pair / row / "seed0.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"direction": pair, "row": row, "seed": 0, "metrics_last": {"iou": iou, "precision": precision, "recall": recall}}))
    cmd = [
        sys.executable, str(REPO_ROOT / "scripts" / "benchmark_da.py"), "choose", f"--rows=source_only,consistency,{BEST}",
        "--seeds=[0]", f"--work_dir={tmp_path / 'work'}", f"--runs_dir={runs_dir}",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    choice = json.loads((tmp_path / "results" / "da_synthetic_choice.json").read_text())
    assert choice["best_uda"] == BEST and choice["shift"] == 0.75
    assert choice["target_test_iou"]["consistency"] == {"mean": 0.2, "per_seed": [0.2]}
    assert choice["target_test_predicted_to_true_foreground"] == pytest.approx({"source_only": 0.5, "consistency": 0.2, BEST: 1.1})


def test_report_of_a_partial_benchmark_sets_source_only_beside_the_choice_pair(tmp_path):
    runs_dir = tmp_path / "runs"
    _write_run(runs_dir, "source_only", 0, 0.40, 0.50, 0.60)  # no unsupervised row run yet
    choice = {"budget": {"name": "development", "max_epochs": 20, "iterations_per_epoch": 20}, "seeds": [0], "target_test_iou": {"source_only": {"mean": 0.1}}, "best_uda": None}
    choice["target_test_predicted_to_true_foreground"] = {"source_only": 1.5}
    (tmp_path / "da_synthetic_choice.json").write_text(json.dumps(choice))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_da.py"), "report", f"--runs_dir={runs_dir}", f"--out={out}", "--docs=False"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    text = (out / "da_benchmark.md").read_text()
    assert "| source_only | 1.50 (IoU 0.100) | 1.20 (IoU 0.400) |" in text
    assert "Source-only over-segments the synthetic target (1.50); VNC → FAFB it over-segments (1.20)." in text
    assert "errs the other way" not in text  # both over-segment


def test_another_budget_reports_beside_the_main_table_and_the_3d_rows_join_the_cpu_report(tmp_path):
    runs_dir = tmp_path / "runs"
    for budget in ("cpu", "cpu_fair"):
        for seed in (0, 1):
            _write_run(runs_dir, "source_only", seed, 0.40 + 0.1 * seed, 0.5, 0.6)
            _write_run(runs_dir, "oracle", seed, 0.80, 0.9, 0.85)
            _write_run(runs_dir, "mmd", seed, 0.45, 0.6, 0.6)
        if budget == "cpu_fair":
            for p in (runs_dir / "cpu").rglob("*.json"):
                target = runs_dir / "cpu_fair" / p.relative_to(runs_dir / "cpu")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(p.read_text())
    three_d = runs_dir / "cpu_3d" / "vnc_to_fafb" / "source_only_3d" / "seed0.json"
    three_d.parent.mkdir(parents=True)
    cell = json.loads((runs_dir / "cpu" / "vnc_to_fafb" / "source_only" / "seed0.json").read_text())
    three_d.write_text(json.dumps({**cell, "row": "source_only_3d", "metrics_last": {**cell["metrics_last"], "iou": 0.5}}))
    out = tmp_path / "out"
    for budget in ("cpu_fair", "cpu"):
        cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_da.py"), "report", f"--runs_dir={runs_dir}", f"--out={out}", f"--budget={budget}", "--docs=False"]
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
        if budget == "cpu_fair":
            assert (out / "da_benchmark_cpu_fair.md").exists() and not (out / "da_benchmark.md").exists()
            assert "Equal total training" in (out / "da_benchmark_cpu_fair.md").read_text()
    text = (out / "da_benchmark.md").read_text()
    effects = json.loads((out / "da_benchmark.json").read_text())["budget_effects"]
    assert effects["cpu_fair"]["vnc_to_fafb"]["rows"]["mmd"] == pytest.approx([0.05, -0.05]) and set(effects) == {"cpu", "cpu_fair"}
    assert (out / "da_budget_effects.png").stat().st_size > 0 and "![paired effects per budget](da_budget_effects.png)" in text
    assert "## Seed methods at each budget" in text and "| cpu_fair | VNC → FAFB | source_only (0.450), **shorter training** | +0.35 ± 0.07 (2/2) | +0.00 ± 0.07 (1/2) |" in text
    assert "## 3D variant" in text and "| source_only | VNC → FAFB | 0.450 ± 0.071 (2) | 0.500 ± 0.000 (1) | +0.100 ± 0.000 (1) |" in text
    assert "Equal total training" not in text


def test_a_cell_records_its_bookkeeping_start_model_and_label_free_scores(tmp_path, monkeypatch):
    bench_da = _benchmark_module(monkeypatch)
    bench = bench_da.Benchmark(tmp_path / "data", tmp_path / "work", tmp_path / "runs", "cpu_fair", "cpu", 1)
    mmd = bench_da.ROW_BY_NAME["mmd"]
    source_root = bench.run_root("vnc_to_fafb", bench_da.ROW_BY_NAME["source_only"], 0)
    source_root.mkdir(parents=True)
    (source_root / bench_da.TRAINED_MARKER).write_text(json.dumps({"epochs": 20}))  # source-only finished here
    evaluated = []
    monkeypatch.setattr(bench, "_checkpoint", lambda d, row, s: bench.last_model(d, row, s))
    monkeypatch.setattr(bench, "_evaluate", lambda d, row, s, checkpoint, name: evaluated.append((name, checkpoint)) or {"iou": 0.5})
    monkeypatch.setattr(bench, "_label_free", lambda d, row, s: {"information_maximization": 0.2})
    cell = bench.run_one("vnc_to_fafb", mmd, 0)
    assert cell["label_free"] == {"information_maximization": 0.2} and cell["wall_s"] >= 0 and cell["epochs"] == 20
    assert [name for name, _ in evaluated] == ["last", "start"]  # under cpu_fair MMD starts from source-only, measured beside it
    assert evaluated[1][1] == bench.last_model("vnc_to_fafb", bench_da.ROW_BY_NAME["source_only"], 0)
    assert json.loads(bench.result_path("vnc_to_fafb", mmd, 0).read_text())["metrics_start"] == {"iou": 0.5}


def test_a_row_is_refused_when_a_model_it_builds_on_is_not_the_one_its_cached_cell_measured(tmp_path, monkeypatch):
    bench_da = _benchmark_module(monkeypatch)
    bench = bench_da.Benchmark(tmp_path / "data", tmp_path / "work", tmp_path / "runs", "cpu_fair", "cpu", 1)
    source_only, mmd, adabn = (bench_da.ROW_BY_NAME[n] for n in ("source_only", "mmd", "adabn"))
    cached = bench.result_path("vnc_to_fafb", source_only, 0)
    cached.parent.mkdir(parents=True)
    cached.write_text(json.dumps({"metrics_last": {"iou": 0.5, "dice": 0.6}}))  # measured on another machine; trained again here
    retrained, evaluated = {"iou": 0.45, "dice": 0.55}, []
    monkeypatch.setattr(bench, "_checkpoint", lambda d, row, s: bench.last_model(d, row, s))
    monkeypatch.setattr(bench, "_evaluate", lambda d, row, s, checkpoint, name: evaluated.append((row.name, name)) or dict(retrained))
    monkeypatch.setattr(bench, "_label_free", lambda d, row, s: None)
    for row in (mmd, adabn):  # trains from source-only under cpu_fair / deploys source-only's model
        with pytest.raises(SystemExit, match=r"builds on source_only, whose model here \(IoU 0.4500\) is not the one its cached cell measured \(IoU 0.5000\)"):
            bench.run_one("vnc_to_fafb", row, 0)
        assert not bench.result_path("vnc_to_fafb", row, 0).exists()
    # the cell's own evaluation kept here gives its metrics: the model here is the cell's, not evaluated again
    kept = bench.eval_dir("vnc_to_fafb", source_only, 0, "last") / "metrics.json"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({"metrics": {"iou": 0.5, "dice": 0.6}}))
    evaluated.clear()
    bench.run_one("vnc_to_fafb", mmd, 0)
    assert ("source_only", "last") not in evaluated and bench.result_path("vnc_to_fafb", mmd, 0).exists()


def test_the_label_free_row_is_the_held_out_rules_pick_per_seed(tmp_path):
    runs_dir = tmp_path / "runs"
    for seed in (0, 1):
        _write_run(runs_dir, "source_only", seed, 0.40, 0.5, 0.6)
        _write_run(runs_dir, "oracle", seed, 0.80, 0.9, 0.85)
        _write_run(runs_dir, "mmd", seed, 0.50 + 0.1 * seed, 0.6, 0.6)
    table = {"negative_entropy": {
        "cpu/vnc_to_fafb/seed0": {"pick": "mmd", "regret": 0.0},
        "cpu/vnc_to_fafb/seed1": {"pick": "source_only", "regret": 0.2},
        "cpu_fair/vnc_to_fafb/seed0": {"pick": "source_only", "regret": 0.1},  # another budget: not this report's
    }}  # fmt: skip
    held_out = {"vnc_to_fafb": {"rule": "negative_entropy", "chosen_on": ["fafb_to_vnc"], "regret": 0.1}}
    (tmp_path / "label_free_selection.json").write_text(json.dumps({"table": table, "held_out": held_out}))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark_da.py"), "report", f"--runs_dir={runs_dir}", f"--out={out}", "--docs=False"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    text = (out / "da_benchmark.md").read_text()
    assert "| VNC → FAFB | negative_entropy (fafb_to_vnc) | 0: mmd, 1: source_only | 0.450 ± 0.071 | +0.050 ± 0.071 (1/2) | 0.100 |" in text
    assert json.loads((out / "da_benchmark.json").read_text())["label_free_pick"]["vnc_to_fafb"]["per_seed"]["1"]["pick"] == "source_only"


def test_pairs_made_after_the_rule_was_fixed_report_adapts_pick(monkeypatch):
    bench_da = _benchmark_module(monkeypatch)
    cell = lambda ious: {"iou_per_seed": ious}  # noqa: E731
    table = {"vnc_to_fafb": {"source_only": cell({0: 0.6}), "coral": cell({0: 0.66}), "mmd": cell({0: 0.65})}}
    pick = {"rule": "balanced_rotation_agreement", "pick": "mmd", "regret": 0.01}
    later = {"cpu_long/vnc_to_fafb/seed0": {"adapt.py rule": pick}, "cpu_fair/vnc_to_fafb/seed0": {"adapt.py rule": pick}, "adapt/membranes_run": {"adapt.py rule": pick}}
    selection = {"held_out": {}, "table": {}, "prospective": later}  # another budget's pair and a recorded adapt.py run are not this budget's
    picks = bench_da.label_free_picks(table, selection, "cpu_long")
    assert picks == {"vnc_to_fafb": {"rule": "balanced_rotation_agreement", "chosen_on": ["adapt.py's, fixed before these cells"], "per_seed": {0: {"pick": "mmd", "iou": 0.65, "regret": 0.01}}}}
    line = bench_da._label_free_pick_lines(table, picks)[-1]
    assert line == "| VNC → FAFB | balanced_rotation_agreement (adapt.py's, fixed before these cells) | 0: mmd | 0.650 | +0.050 (1/1) | 0.010 |"


def test_cpu_report_picks_per_target_from_recorded_adapt_runs(tmp_path, monkeypatch):
    """The cells of ``cpu`` kept no scores: its per-target pick is each recorded adapt.py run's, on that
    direction's own target at that budget, with source-only and regret from the same run's metrics."""
    bench_da = _benchmark_module(monkeypatch)
    folder = tmp_path / "adapt"
    folder.mkdir()

    def record(name: str, seed: int, ious: dict, pick: str, **fields) -> None:
        metrics = {n: {"metrics": {"iou": iou}} for n, iou in ious.items()}
        base = {"budget": "cpu", "seed": seed, "family": "fafb_to_vnc", "target_shift": None, "rule": "balanced_rotation_agreement"}
        (folder / f"{name}.json").write_text(json.dumps({**base, **fields, "pick": pick, "target_test_metrics": metrics}))

    record("f2v_seed0", 0, {"source_only": 0.2, "tent": 0.4, "balanced_consistency": 0.35}, "balanced_consistency")
    record("f2v_seed1", 1, {"source_only": 0.3, "tent": 0.35, "balanced_consistency": 0.45}, "balanced_consistency")
    record("f2v_reimaged", 2, {"source_only": 0.1, "tent": 0.9}, "source_only", target_shift="coarse_flat")  # another target
    record("f2v_long", 3, {"source_only": 0.1, "tent": 0.9}, "source_only", budget="cpu_long")  # another budget
    record("membranes", 0, {"source_only": 0.1, "tent": 0.9}, "source_only", family="membranes")  # another task
    picks = bench_da.adapt_run_picks(folder, "cpu")
    assert list(picks) == ["fafb_to_vnc"] and list(picks["fafb_to_vnc"]["per_seed"]) == [0, 1]
    seed0 = picks["fafb_to_vnc"]["per_seed"][0]
    assert seed0["iou"] == 0.35 and seed0["source_only"] == 0.2 and seed0["regret"] == pytest.approx(0.05)
    line = bench_da._adapt_pick_lines(picks)[-1]
    assert line == "| FAFB → VNC | balanced_rotation_agreement (adapt.py's, fixed before these runs) | 0: balanced_consistency, 1: balanced_consistency | 0.400 ± 0.071 | +0.150 ± 0.000 (2/2) | 0.025 |"
    assert bench_da.adapt_run_picks(tmp_path / "absent", "cpu") == {}
    record("f2v_seed1_again", 1, {"source_only": 0.3, "tent": 0.35}, "tent")
    with pytest.raises(SystemExit, match="second recorded adapt.py run of fafb_to_vnc, seed 1"):
        bench_da.adapt_run_picks(folder, "cpu")


def test_gap_closed_uses_the_seeds_a_row_shares_with_both_bounds(tmp_path, monkeypatch):
    """A grid still running: source-only has seed 1, the oracle and the row not yet; seed 1 must not move the row's gap."""
    bench_da = _benchmark_module(monkeypatch)
    runs_dir = tmp_path / "runs"
    for row, iou in (("source_only", 0.40), ("oracle", 0.80), ("mmd", 0.60)):
        _write_run(runs_dir, row, 0, iou, 0.5, 0.6, budget_name="cpu_long")
    _write_run(runs_dir, "source_only", 1, 0.60, 0.5, 0.6, budget_name="cpu_long")
    cells = bench_da.summarise(bench_da._load(runs_dir / "cpu_long"))["vnc_to_fafb"]
    assert cells["source_only"]["n_seeds"] == 2 and cells["source_only"]["iou"]["mean"] == pytest.approx(0.50)
    assert cells["mmd"]["gap_closed"] == pytest.approx(0.5) and cells["source_only"]["gap_closed"] == pytest.approx(0.0)


def test_gap_closed_of_a_row_on_seeds_the_oracle_lacks(tmp_path, monkeypatch):
    """Fine-tuning run on later seeds (source-only retrained, no oracle): the paired gain over all its seeds,
    divided by the oracle's lead over the seeds both bounds share."""
    bench_da = _benchmark_module(monkeypatch)
    runs_dir = tmp_path / "runs"
    for seed, (low, high) in enumerate(((0.40, 0.80), (0.50, 0.70))):
        _write_run(runs_dir, "source_only", seed, low, 0.5, 0.6, budget_name="cpu_long")
        _write_run(runs_dir, "oracle", seed, high, 0.5, 0.6, budget_name="cpu_long")
    for seed, (low, row) in ((0, (0.40, 0.60)), (3, (0.30, 0.60))):
        _write_run(runs_dir, "source_only", seed, low, 0.5, 0.6, budget_name="cpu_long")
        _write_run(runs_dir, "ft_10", seed, row, 0.5, 0.6, budget_name="cpu_long")
    cells = bench_da.summarise(bench_da._load(runs_dir / "cpu_long"))["vnc_to_fafb"]
    assert cells["ft_10"]["n_seeds"] == 2
    assert cells["ft_10"]["gap_closed"] == pytest.approx(((0.2 + 0.3) / 2) / ((0.4 + 0.2) / 2))
    assert cells["ft_10"]["gap_closed_per_seed"] == {0: pytest.approx(0.5)}


def test_rows_below_source_only_are_judged_paired(monkeypatch):
    """Source-only has a poor extra seed the row lacks: its mean falls below the row's, yet on their shared seed the row is below it."""
    bench_da = _benchmark_module(monkeypatch)
    cell = lambda ious: {"iou_per_seed": ious, "iou": {"mean": sum(ious.values()) / len(ious), "std": 0.01}, "precision": {"mean": 0.5}, "recall": {"mean": 0.5}}  # noqa: E731
    table = {"vnc_to_fafb": {"source_only": cell({0: 0.60, 3: 0.30}), "mmd": cell({0: 0.55}), "coral": cell({0: 0.62})}}
    text = "\n".join(bench_da._diagnosis(table, {}))
    assert "1 of 2 unsupervised rows below source-only" in text and "mmd (paired IoU -0.050" in text and "coral (" not in text
