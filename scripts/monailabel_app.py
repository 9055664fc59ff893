"""Serve the em_mitochondria bundle with MONAI Label's ``monaibundle`` app, from local files only.

    python scripts/monailabel_app.py prepare --app-dir label_app --checkpoint runs/vnc/models/model.pt
    python scripts/monailabel_app.py start --app-dir label_app --studies my_em_volumes --port 8000

MONAI Label (0.8.5) finds a bundle locally when ``<app>/model/<name>/`` exists and ``zoo_source``
is not ``monaihosting``; nothing is downloaded then. ``prepare`` copies the ``monaibundle`` sample
app that ships inside the MONAI Label installation (``<venv>/monailabel/sample-apps/``) and puts
our bundle (configs, docs, licence) and a trained checkpoint (as ``models/model.pt``) under
``<app>/model/em_mitochondria``. ``start`` runs ``monailabel start_server`` with the matching
``--conf`` options (``models``, ``zoo_source``, no SAM2, trainers on or off). Run both with the
Python of the venv where MONAI Label is installed (see the README, "MONAI Label").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import fire

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "em_mitochondria"
NAME = "em_mitochondria"
ZOO_SOURCE = "local"  # anything but "monaihosting": MONAI Label then uses <app>/model/<name> as is


def sample_app() -> Path:
    """The ``monaibundle`` sample app inside the MONAI Label installation of this Python."""
    candidates = [Path(sys.prefix) / "monailabel" / "sample-apps" / "monaibundle"]
    try:
        import monailabel

        candidates.append(Path(monailabel.__file__).resolve().parents[1] / "sample-apps" / "monaibundle")
    except ImportError:
        raise SystemExit(f"MONAI Label is not installed for {sys.executable}; see the README section 'MONAI Label'.") from None
    for path in candidates:
        if (path / "main.py").is_file():
            return path
    raise SystemExit(f"the monaibundle sample app was not found (looked in {', '.join(map(str, candidates))}).")


def prepare(app_dir: str, checkpoint: str, overwrite: bool = False) -> None:
    """Copy the monaibundle app to ``app_dir`` with our bundle and ``checkpoint`` under ``model/``."""
    app, ckpt = Path(app_dir), Path(checkpoint)
    if not ckpt.is_file():
        raise SystemExit(f"{ckpt}: checkpoint not found (train the bundle first: models/model.pt).")
    if app.exists():
        if not overwrite:
            raise SystemExit(f"{app} already exists; pass --overwrite to replace it.")
        shutil.rmtree(app)
    shutil.copytree(sample_app(), app, ignore=shutil.ignore_patterns("__pycache__"))
    bundle = app / "model" / NAME
    for part in ("configs", "docs", "LICENSE"):
        source = BUNDLE / part
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, bundle / part)
    (bundle / "models").mkdir()
    shutil.copy2(ckpt, bundle / "models" / "model.pt")
    print(f"MONAI Label app with {NAME} ready in {app}")


def server_command(app_dir: str, studies: str, host: str = "127.0.0.1", port: int = 8000, trainers: bool = True) -> list[str]:
    """The ``monailabel start_server`` command line for an app made by ``prepare``."""
    conf = {"models": NAME, "zoo_source": ZOO_SOURCE, "sam2": "false", "skip_trainers": str(not trainers).lower()}
    options = [arg for key, value in conf.items() for arg in ("--conf", key, value)]
    launcher = Path(sys.executable).with_name("monailabel")
    return [str(launcher), "start_server", "--app", str(app_dir), "--studies", str(studies), "--host", host, "--port", str(port), *options]


def start(app_dir: str, studies: str, host: str = "127.0.0.1", port: int = 8000, trainers: bool = True) -> None:
    """Run the MONAI Label server in the foreground (Ctrl-C stops it)."""
    if not (Path(app_dir) / "model" / NAME / "models" / "model.pt").is_file():
        raise SystemExit(f"{app_dir}: no prepared app; run `prepare` first.")
    Path(studies).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(server_command(app_dir, studies, host, port, trainers), check=True, env=env)


if __name__ == "__main__":
    fire.Fire({"prepare": prepare, "start": start})
