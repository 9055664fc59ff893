"""Dataset download code against a local HTTP server: checksums verified, offline errors clear."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

from custom.data import EMDataError
from custom.data.datasets import _fetch


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    (served / "im").mkdir(parents=True)
    (served / "im" / "a.png").write_bytes(b"section a")
    (served / "im" / "b.png").write_bytes(b"section b")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def _registry(tmp_path, monkeypatch, entries: dict[str, bytes]) -> None:
    folder = tmp_path / "registry"
    folder.mkdir()
    lines = [f"{name} sha256:{hashlib.sha256(data).hexdigest()}" for name, data in entries.items()]
    (folder / "toy.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(_fetch, "REGISTRY_DIR", folder)


def test_download_verifies_checksums(tmp_path, monkeypatch, server):
    _registry(tmp_path, monkeypatch, {"im/a.png": b"section a", "im/b.png": b"section b"})
    folder = _fetch.fetch_registered("toy", server, tmp_path / "root", download=True)
    assert (folder / "im" / "b.png").read_bytes() == b"section b"
    assert _fetch.fetch_registered("toy", server, tmp_path / "root", download=False) == folder  # present: no download


def test_checksum_mismatch_is_reported(tmp_path, monkeypatch, server):
    _registry(tmp_path, monkeypatch, {"im/a.png": b"something else"})
    with pytest.raises(EMDataError, match="checksum mismatch"):
        _fetch.fetch_registered("toy", server, tmp_path / "root", download=True)


def test_missing_files_without_download_and_unreachable_host(tmp_path, monkeypatch):
    _registry(tmp_path, monkeypatch, {"im/a.png": b"section a"})
    with pytest.raises(EMDataError, match="1 of 1 files missing"):
        _fetch.fetch_registered("toy", "http://127.0.0.1:9/", tmp_path / "root", download=False)
    with pytest.raises(EMDataError, match="could not download"):
        _fetch.fetch_registered("toy", "http://127.0.0.1:9/", tmp_path / "root", download=True)

