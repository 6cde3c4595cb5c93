"""Downloads against a loopback HTTP server: success, 404, corrupted bytes, interrupted transfer."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from echo_jax import data
from echo_jax.data import registry

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABELS = "mnist/t10k-labels-idx1-ubyte.gz"
IMAGES = "mnist/t10k-images-idx3-ubyte.gz"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; /truncated/NAME promises more bytes than it sends, then hangs up."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.removeprefix("/truncated/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        """Keeps the per-request log out of the test output."""


def require_shared_mnist() -> None:
    """Skip where ../shared/data is absent, unless CI requires it (then fail)."""
    source = SHARED_DATA / "mnist"
    if not source.is_dir():
        if os.environ.get("ECHO_JAX_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{source} is missing but ECHO_JAX_REQUIRE_SHARED_DATA=1 requires it.")
        pytest.skip(f"{source} is absent (a fresh clone); the download tests serve its files.")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, served folder) of a loopback server over copies of small real MNIST files."""
    require_shared_mnist()
    served = tmp_path_factory.mktemp("served")
    for name in (LABELS, IMAGES):
        shutil.copy(SHARED_DATA / name, served / Path(name).name)
    corrupted = bytearray((served / Path(LABELS).name).read_bytes())
    corrupted[100] ^= 0xFF
    (served / "corrupted.gz").write_bytes(bytes(corrupted))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


def _serve_as(monkeypatch, key: str, url: str, sha256: str) -> None:
    monkeypatch.setitem(registry.REGISTRY, key, registry.RemoteFile(url, sha256, registry.REGISTRY[key].content_sha256))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_success_then_load(server, monkeypatch, tmp_path):
    base, served = server
    for key in (LABELS, IMAGES):
        _serve_as(monkeypatch, key, f"{base}/{Path(key).name}", _sha256(served / Path(key).name))
    cache = tmp_path / "cache"
    dataset = data.load("mnist", "test", data_dir=cache, binarize="none")
    assert _sha256(cache / LABELS) == _sha256(SHARED_DATA / LABELS)
    reference = data.load("mnist", "test", data_dir=SHARED_DATA, binarize="none")
    np.testing.assert_array_equal(dataset.images, reference.images)
    np.testing.assert_array_equal(dataset.labels, reference.labels)
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(Path(k).name for k in (LABELS, IMAGES))


@pytest.mark.parametrize(
    "route, error",
    [
        ("missing.gz", data.DataUnavailableError),
        ("corrupted.gz", data.ChecksumMismatchError),
        ("truncated/t10k-labels-idx1-ubyte.gz", data.DataUnavailableError),
    ],
)
def test_failed_downloads_leave_nothing_to_trust(server, monkeypatch, tmp_path, route, error):
    base, served = server
    url = f"{base}/{route}"
    _serve_as(monkeypatch, LABELS, url, _sha256(served / Path(LABELS).name))
    cache = tmp_path / "cache"
    with pytest.raises(error) as raised:
        data.fetch(LABELS, cache)
    assert url in str(raised.value)
    if error is data.DataUnavailableError:
        assert str(cache) in str(raised.value) and isinstance(raised.value, FileNotFoundError)
    # Not the target, nor a temporary file a later run could mistake for it.
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    # A later run with a good server succeeds in the same cache.
    _serve_as(monkeypatch, LABELS, f"{base}/{Path(LABELS).name}", _sha256(served / Path(LABELS).name))
    assert _sha256(data.fetch(LABELS, cache)) == _sha256(served / Path(LABELS).name)


def test_present_file_with_wrong_bytes_is_refused(tmp_path, monkeypatch):
    key = "binarized_mnist/binarized_mnist_test.amat"
    (tmp_path / "binarized_mnist").mkdir()
    (tmp_path / key).write_bytes(b"0 1\n")
    with pytest.raises(data.ChecksumMismatchError, match="delete it"):
        data.fetch(key, tmp_path)


def test_recompressed_mnist_passes_on_content_and_tampered_content_fails(tmp_path):
    require_shared_mnist()
    (tmp_path / "mnist").mkdir()
    # The shared .gz bytes differ from upstream's; the decompressed content is what is checked.
    shutil.copy(SHARED_DATA / LABELS, tmp_path / LABELS)
    assert _sha256(tmp_path / LABELS) != registry.REGISTRY[LABELS].sha256
    assert len(data.read_verified(LABELS, tmp_path)) == 8 + 10_000
    content = bytearray(gzip.decompress((tmp_path / LABELS).read_bytes()))
    content[-1] = (content[-1] + 1) % 10
    (tmp_path / LABELS).write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(data.ChecksumMismatchError, match="decompressed content"):
        data.read_verified(LABELS, tmp_path)
