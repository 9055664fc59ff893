"""MONAI Label serves the em_mitochondria bundle: a real server on 127.0.0.1 answers /infer on a VNC crop.

MONAI Label needs its own virtual environment (it pulls torch 2.14 and torchvision; see the README
section "MONAI Label"). The test runs only with the Python of that environment named by
``MONAILABEL_PYTHON``: `.ci/run` builds ``.venv-label`` and runs this file once with it, after the main
suite (which skips it, so a leftover ``.venv-label`` does not make CI start the server twice).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from custom.data.datasets import load_drosophila_vnc

from .conftest import REPO_ROOT, run_bundle

LABEL_PYTHON = Path(os.environ.get("MONAILABEL_PYTHON", ""))

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not LABEL_PYTHON.is_file(), reason="MONAILABEL_PYTHON names no MONAI Label environment's python (see README, 'MONAI Label')"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(fields: dict[str, str], file_field: str, file_path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file_path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    body = b"".join(parts) + head.encode() + file_path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def vnc_crop(shared_data, tmp_path_factory) -> tuple[Path, np.ndarray]:
    image, label, spacing = load_drosophila_vnc(shared_data)
    crop = np.ascontiguousarray(image[:3, :512, :512])
    path = tmp_path_factory.mktemp("studies") / "vnc_crop.tif"
    tifffile.imwrite(path, crop, imagej=True, resolution=(1 / spacing[2], 1 / spacing[1]), metadata={"spacing": spacing[0], "unit": "nm"})
    return path, label[:3, :512, :512]


@pytest.fixture(scope="module")
def checkpoint(prepared, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("label_bundle")
    budget = ("--max_epochs", "4", "--iterations_per_epoch", "25", "--val_interval", "4", "--patch_size", "[128,128]", "--batch_size", "4")
    run_bundle(["train.json"], root, "--dataset_dir", str(prepared / "vnc_to_fafb"), *budget)
    return root / "models" / "model.pt"


def test_server_segments_a_posted_vnc_volume(tmp_path, vnc_crop, checkpoint):
    crop_path, crop_label = vnc_crop
    script = REPO_ROOT / "scripts" / "monailabel_app.py"
    app = tmp_path / "app"
    subprocess.run([str(LABEL_PYTHON), str(script), "prepare", str(app), str(checkpoint)], check=True, timeout=120)
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [str(LABEL_PYTHON), str(script), "start", str(app), str(tmp_path / "studies"), "--port", str(port), "--trainers=False"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                info = json.loads(urllib.request.urlopen(f"{base}/info/", timeout=5).read())
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"server did not start:\n{(tmp_path / 'server.log').read_text()[-4000:]}")
                time.sleep(2)
        assert "em_mitochondria" in info["models"]
        assert info["models"]["em_mitochondria"]["labels"] == {"mitochondria": 1}

        body, content_type = _multipart({"params": json.dumps({"result_extension": ".nii.gz"})}, "file", crop_path)
        request = urllib.request.Request(f"{base}/infer/em_mitochondria?output=image", data=body, headers={"Content-Type": content_type})
        answer = urllib.request.urlopen(request, timeout=600).read()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()
    result = tmp_path / "mask.nii.gz"
    result.write_bytes(answer)
    nifti = nib.load(result)
    mask = np.asarray(nifti.dataobj)  # MONAI's axis order, as the bundle's reader loaded the volume: (Z, Y, X)
    assert mask.shape == crop_label.shape
    np.testing.assert_allclose(nifti.header.get_zooms(), (50.0, 4.6, 4.6), rtol=1e-4)  # spacing kept
    assert set(np.unique(mask)) <= {0, 1}
    assert 0.005 < mask.mean() < 0.4  # mitochondria cover ~5 % of VNC
    intersection = np.logical_and(mask > 0, crop_label > 0).sum()
    assert intersection / np.logical_or(mask > 0, crop_label > 0).sum() > 0.1  # overlaps the real mitochondria
