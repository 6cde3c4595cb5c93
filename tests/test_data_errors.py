"""Bad data files and failed lookups: errors that name the file and the fix, and leave nothing behind."""

import os
from pathlib import Path

import numpy as np
import pooch
import pytest

from echo_jax import data
from echo_jax.data import registry
from echo_jax.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def unreachable(monkeypatch, key):
    monkeypatch.setitem(
        registry.REGISTRY, key, registry.RemoteFile("http://127.0.0.1:9/x", registry.REGISTRY[key].sha256)
    )


def test_truncated_gz_names_the_file(tmp_path):
    source = SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz"
    if not source.exists():
        if os.environ.get("ECHO_JAX_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{source} is missing but ECHO_JAX_REQUIRE_SHARED_DATA=1 requires it.")
        pytest.skip("shared data absent")
    (tmp_path / "mnist").mkdir()
    target = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(source.read_bytes()[:200])
    with pytest.raises(data.ChecksumMismatchError, match="t10k-labels-idx1-ubyte.gz is truncated or corrupted"):
        data.read_verified("mnist/t10k-labels-idx1-ubyte.gz", tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_npz_names_the_file(tmp_path, damage):
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    path = folder / "binarized_mnist.npz"
    buffer = tmp_path / "good.npz"
    np.savez_compressed(
        buffer,
        train=np.zeros((5, 784), np.uint8),
        valid=np.zeros((5, 784), np.uint8),
        test=np.zeros((5, 784), np.uint8),
    )
    good = buffer.read_bytes()
    path.write_bytes(good[: len(good) // 2] if damage == "truncate" else b"not a zip archive" * 10)
    with pytest.raises(data.DataFormatError, match=f"{path} is truncated or corrupted") as raised:
        data.load("binary_mnist", "test", data_dir=tmp_path)
    assert isinstance(raised.value, UserError)


def test_blanked_omniglot_repack_is_refused(tmp_path):
    (tmp_path / "omniglot").mkdir()
    blank = np.ones((964, 20, 105, 105), bool)  # right shape and type, no ink
    np.savez_compressed(tmp_path / "omniglot" / "images_background.npz", images=blank)
    with pytest.raises(data.ChecksumMismatchError, match="images_background.npz"):
        data.load("omniglot", "test", data_dir=tmp_path)


def test_failed_lookup_in_a_missing_folder_creates_nothing(tmp_path, monkeypatch):
    unreachable(monkeypatch, "mnist/t10k-labels-idx1-ubyte.gz")
    unreachable(monkeypatch, "mnist/t10k-images-idx3-ubyte.gz")
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(data.DataUnavailableError, match="t10k-images-idx3-ubyte.gz"):
        data.load("mnist", "test", data_dir=missing)
    assert list(tmp_path.iterdir()) == []


def test_read_only_cache_names_the_missing_file(tmp_path, monkeypatch):
    unreachable(monkeypatch, "mnist/t10k-images-idx3-ubyte.gz")
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setattr(
        pooch, "retrieve", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied", str(folder)))
    )
    with pytest.raises(data.DataUnavailableError) as raised:
        data.load("mnist", "test", data_dir=folder)
    message = str(raised.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "cannot be saved there" in message and str(folder) in message


def test_more_examples_than_the_split_is_refused():
    with pytest.raises(ValueError, match="num_examples=1001 is more than the 1000 examples"):
        data.load("mnist_sample", "test", num_examples=1001)
    assert len(data.load("mnist_sample", "test", num_examples=1000)) == 1000
    with pytest.raises(ValueError, match="more than"):
        data.load("dsprites", "train", num_examples=737_281, source="render")
