"""Bad data files and failed lookups: errors that name the file and the fix, and leave nothing behind."""

import builtins
import errno
import io
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


@pytest.fixture
def deny_reading(monkeypatch):
    """Makes files unreadable as they are to a user without read permission: opening one raises the OS's
    PermissionError. (Tests run as root, who reads any file, so chmod 000 cannot stand for this.)"""
    denied = set()
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.realpath(file) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)  # pathlib and zipfile open through io.open
    return lambda path: denied.add(os.path.realpath(path))


@pytest.fixture
def no_download(monkeypatch):
    """Fails the test on any download attempt."""

    def retrieve(url, *args, **kwargs):
        raise AssertionError(f"attempted to download {url}")

    monkeypatch.setattr(pooch, "retrieve", retrieve)


def write_binarized_npz(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    empty = np.zeros((5, 784), np.uint8)
    np.savez_compressed(path, train=empty, valid=empty, test=empty)


def write_chardata(path):
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"data": np.zeros((784, 3)), "testdata": np.zeros((784, 2))})


def write_bytes(path, content=b"any bytes: reading fails before they matter"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


# (dataset, options, the file to make unreadable, how to write it): one case per way a file is opened.
UNREADABLE_CASES = {
    "npz repack (np.load)": ("binary_mnist", {}, "binarized_mnist/binarized_mnist.npz", write_binarized_npz),
    "gz (read_verified)": ("mnist", {}, "mnist/t10k-images-idx3-ubyte.gz", write_bytes),
    "amat (its sha256)": ("binary_mnist", {}, "binarized_mnist/binarized_mnist_test.amat", write_bytes),
    "zip (its sha256)": ("omniglot", {}, "omniglot/images_background.zip", write_bytes),
    "mat (loadmat)": ("omniglot", {"source": "chardata"}, "omniglot/chardata.mat", write_chardata),
    "dsprites npz": ("dsprites", {}, "dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", write_bytes),
}


@pytest.mark.parametrize("case", UNREADABLE_CASES)
def test_an_unreadable_file_is_called_unreadable_not_corrupted(tmp_path, deny_reading, no_download, case):
    name, options, relative, write = UNREADABLE_CASES[case]
    path = tmp_path / relative
    write(path)
    deny_reading(path)
    with pytest.raises(UserError) as raised:
        data.load(name, "test", data_dir=tmp_path, num_examples=2, **options)
    message = str(raised.value)
    assert isinstance(raised.value, OSError)  # still what it is underneath
    assert message.startswith(f"permission denied reading {path}; make it readable (chmod")
    assert "delete" not in message and "corrupt" not in message and "\n" not in message
    assert path.exists()


def test_an_unreadable_hdf5_is_called_unreadable(tmp_path, monkeypatch):
    import h5py

    # h5py opens files in C, past Python's open: its PermissionError is the one to translate.
    def denied(path, *args, **kwargs):
        raise PermissionError(
            errno.EACCES, f"Unable to open file (name = '{path}', error message = 'Permission denied')"
        )

    monkeypatch.setattr(h5py, "File", denied)
    path = tmp_path / "dsprites.hdf5"
    write_bytes(path)
    with pytest.raises(UserError, match=f"^permission denied reading {path}; make it readable") as raised:
        data.readers.read_dsprites_file(path)
    assert "delete" not in str(raised.value)


def test_a_folder_that_may_not_be_searched_is_named(tmp_path, monkeypatch, no_download):
    folder = tmp_path / "mnist"
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if self.parent == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(UserError, match=f"^permission denied looking up {folder}/t10k-images-idx3-ubyte.gz; make"):
        data.load("mnist", "test", data_dir=tmp_path)


DIRECTORY_CASES = {
    "downloadable file": ("mnist", {}, "mnist/t10k-images-idx3-ubyte.gz"),
    "npz repack": ("binary_mnist", {}, "binarized_mnist/binarized_mnist.npz"),
    "omniglot repack": ("omniglot", {}, "omniglot/images_background.npz"),
    "dsprites file": ("dsprites", {}, "dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"),
    "hand-provided file": ("omniglot", {"source": "chardata"}, "omniglot/chardata.mat"),
}


@pytest.mark.parametrize("case", DIRECTORY_CASES)
def test_a_directory_where_a_file_should_be_is_an_error_not_a_download(tmp_path, no_download, case):
    name, options, relative = DIRECTORY_CASES[case]
    path = tmp_path / relative
    path.mkdir(parents=True)
    with pytest.raises(UserError) as raised:
        data.load(name, "test", data_dir=tmp_path, num_examples=2, **options)
    message = str(raised.value)
    assert message.startswith(f"{path} is a directory, but that is where the dataset file {path.name} should be")
    assert "\n" not in message
    assert path.is_dir()


@pytest.mark.parametrize("key", sorted(k for k, entry in registry.REGISTRY.items() if entry.sha256 is None))
def test_a_file_without_a_pinned_sha256_is_never_downloaded(tmp_path, no_download, key):
    folder = tmp_path / "data"
    with pytest.raises(data.DataUnavailableError) as raised:
        data.fetch(key, folder)
    message = str(raised.value)
    assert "sha256 is unknown" in message and "\n" not in message
    assert registry.REGISTRY[key].url in message and f"put it at {folder / key}" in message
    assert list(tmp_path.iterdir()) == []


def test_the_iwae_omniglot_is_provided_by_hand(tmp_path, no_download):
    with pytest.raises(data.DataUnavailableError, match="chardata.mat.*sha256 is unknown.*put it at"):
        data.load("omniglot", "test", data_dir=tmp_path, source="chardata")
    write_chardata(tmp_path / "omniglot" / "chardata.mat")  # by hand: then it is read
    assert len(data.load("omniglot", "test", data_dir=tmp_path, source="chardata")) == 2
