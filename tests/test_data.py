"""Datasets as loaded from ../shared/data: sizes, statistics, content against independent readers."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from echo_jax import data
from echo_jax.data import readers, registry

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def shared_data() -> Path:
    """../shared/data; skipped only where it is absent and CI does not require it."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if os.environ.get("ECHO_JAX_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(f"{SHARED_DATA} is missing but ECHO_JAX_REQUIRE_SHARED_DATA=1 requires it.")
    pytest.skip(f"{SHARED_DATA} is absent (a fresh clone); the dataset tests need it.")


def plain_idx(path: Path) -> np.ndarray:
    """An independent idx reader: struct header, gzip, no shared code."""
    raw = gzip.open(path).read()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim :], np.uint8).reshape(shape)


def test_available_lists_every_dataset():
    expected = {"binary_mnist", "mnist", "fashion_mnist", "omniglot", "dsprites", "dsprites_correlated", "mnist_sample"}
    assert set(data.available()) == expected


@pytest.mark.parametrize(
    "split, size, mean", [("train", 50_000, 0.13056), ("valid", 10_000, 0.13113), ("test", 10_000, 0.13251)]
)
def test_binary_mnist_sizes_and_mean_of_ones(shared_data, split, size, mean):
    dataset = data.load("binary_mnist", split, data_dir=shared_data)
    assert dataset.images.shape == (size, 28, 28, 1) and dataset.images.dtype == np.float32
    assert dataset.image_shape == (28, 28, 1) and len(dataset) == size
    assert set(np.unique(dataset.images)) == {0.0, 1.0}
    assert dataset.binarize == "static" and dataset.labels is None
    # Published means of the Larochelle binarization, to the 5 digits given.
    assert abs(dataset.images.mean(dtype=np.float64) - mean) < 5e-6


def test_binary_mnist_amat_reader_matches_the_npz(shared_data):
    npz = np.load(shared_data / "binarized_mnist" / "binarized_mnist.npz")["valid"]
    # Write .amat text by hand (not with the code under test) and read it back.
    lines = "".join(" ".join(str(v) for v in row) + "\n" for row in npz[:50])
    assert np.array_equal(readers.parse_amat(lines.encode(), "test"), npz[:50])
    with pytest.raises(readers.DataFormatError, match="amat"):
        readers.parse_amat(lines.replace("0 1", "0,1", 1).encode(), "test")


@pytest.mark.parametrize("name, folder", [("mnist", "mnist"), ("fashion_mnist", "fashion_mnist")])
def test_idx_datasets_match_an_independent_reader(shared_data, name, folder):
    for split, prefix, size in [("train", "train", 60_000), ("test", "t10k", 10_000)]:
        dataset = data.load(name, split, data_dir=shared_data, binarize="none")
        raw = plain_idx(shared_data / folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = plain_idx(shared_data / folder / f"{prefix}-labels-idx1-ubyte.gz")
        assert dataset.images.shape == (size, 28, 28, 1) and len(dataset.labels) == size
        np.testing.assert_array_equal(dataset.images[..., 0], raw.astype(np.float32) / 255.0)
        np.testing.assert_array_equal(dataset.labels, labels)


def test_mnist_and_fashion_label_counts(shared_data):
    mnist = data.load("mnist", "train", data_dir=shared_data)
    # The well-known class counts of the MNIST training set, and its first label.
    assert np.bincount(mnist.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert mnist.labels[0] == 5 and mnist.binarize == "dynamic"
    fashion = data.load("fashion_mnist", "test", data_dir=shared_data)
    assert np.bincount(fashion.labels).tolist() == [1000] * 10
    assert abs(fashion.images.mean() - 0.2868) < 1e-3


def test_validation_split_and_threshold(shared_data):
    full = data.load("fashion_mnist", "train", data_dir=shared_data)
    train = data.load("fashion_mnist", "train", data_dir=shared_data, validation_size=10_000)
    valid = data.load("fashion_mnist", "valid", data_dir=shared_data, validation_size=10_000)
    # The original's Fashion-MNIST: the first 50,000 train; the last 10,000 held out.
    np.testing.assert_array_equal(train.images, full.images[:50_000])
    np.testing.assert_array_equal(valid.labels, full.labels[50_000:])
    thresholded = data.load("mnist_sample", "test", binarize="threshold")
    grey = data.load("mnist_sample", "test", binarize="none")
    np.testing.assert_array_equal(thresholded.images, (grey.images >= 0.5).astype(np.float32))


def test_omniglot_sizes_and_area_downsampling(shared_data):
    train = data.load("omniglot", "train", data_dir=shared_data)
    test = data.load("omniglot", "test", data_dir=shared_data, binarize="none")
    assert train.images.shape == (24_345, 28, 28, 1) and test.images.shape == (8_115, 28, 28, 1)
    assert train.labels.max() == 1622 and np.bincount(train.labels).tolist() == [15] * 1623
    assert 0.0 <= test.images.min() and test.images.max() <= 1.0
    drawings = np.load(shared_data / "omniglot" / "images_evaluation.npz")["images"]
    # Test image of evaluation character 7, drawer 15 + 2, and another: exact area averaging by
    # hand, 105 -> 420 by repeating each pixel 4 times, then means of 15 x 15 blocks (420 = 28 * 15).
    for character, drawer in [(7, 2), (300, 4)]:
        ink = (~drawings[character, 15 + drawer]).astype(np.float64)
        fine = np.repeat(np.repeat(ink, 4, axis=0), 4, axis=1)
        expected = fine.reshape(28, 15, 28, 15).mean(axis=(1, 3))
        served = test.images[(964 + character) * 5 + drawer, ..., 0]
        np.testing.assert_allclose(served, expected, atol=1e-5)
        assert test.labels[(964 + character) * 5 + drawer] == 964 + character


def test_omniglot_zip_reader_matches_the_npz_repack(shared_data):
    images, character_ids = readers.read_omniglot_zip(shared_data / "omniglot" / "images_background_small1.zip")
    background = np.load(shared_data / "omniglot" / "images_background.npz")["images"]
    assert images.shape == (136, 20, 105, 105)
    # Background characters are numbered from 1: npz row = XXXX - 1.
    np.testing.assert_array_equal(images, background[character_ids - 1])


def test_chardata_reader_turns_column_major_images_upright(tmp_path):
    images = np.zeros((3, 28, 28))
    images[:, 0, 5] = 1.0  # a mark in the top row, off the diagonal
    # chardata stores each image column by column, one image per column of the matrix.
    columns = np.stack([image.flatten(order="F") for image in images], axis=1)
    (tmp_path / "omniglot").mkdir()
    scipy.io.savemat(tmp_path / "omniglot" / "chardata.mat", {"data": columns, "testdata": columns[:, :2]})
    train = data.load("omniglot", "train", data_dir=tmp_path, source="chardata", binarize="none")
    test = data.load("omniglot", "test", data_dir=tmp_path, source="chardata", binarize="none")
    assert train.images.shape == (3, 28, 28, 1) and len(test) == 2
    assert train.images[0, 0, 5, 0] == 1.0 and train.images.sum() == 3.0


def test_mnist_sample_checksum_shapes_and_provenance(shared_data, monkeypatch, tmp_path):
    path = data.mnist_sample_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == registry.MNIST_SAMPLE_SHA256
    assert path.stat().st_size <= 2_100_000
    assert (path.parent / "MNIST_SAMPLE_LICENSE.txt").is_file()
    # No data folder at all: the sample ships with the package.
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nothing-here"))
    train = data.load("mnist_sample", "train")
    test = data.load("mnist_sample", "test")
    assert train.images.shape == (9_000, 28, 28, 1) and test.images.shape == (1_000, 28, 28, 1)
    assert train.binarize == "dynamic" and not (tmp_path / "nothing-here").exists()
    raw = plain_idx(shared_data / "mnist" / "train-images-idx3-ubyte.gz")
    labels = plain_idx(shared_data / "mnist" / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(train.images[..., 0], raw[:9_000] / np.float32(255.0))
    np.testing.assert_array_equal(test.images[..., 0], raw[9_000:10_000] / np.float32(255.0))
    np.testing.assert_array_equal(np.concatenate([train.labels, test.labels]), labels[:10_000])


@pytest.mark.parametrize(
    "name, split, options, message",
    [
        ("mnistt", "train", {}, "Unknown dataset 'mnistt'; available: binary_mnist"),
        ("mnist", "validation", {}, "valid splits: train, valid, test"),
        ("omniglot", "valid", {}, "valid splits: train, test"),
        ("mnist", "train", {"binarise": "dynamic"}, "Unknown option.*binarise.*valid options: binarize"),
        ("mnist", "train", {"binarize": "static"}, "valid values: 'dynamic'.*binary_mnist"),
        ("binary_mnist", "train", {"binarize": "dynamic"}, "valid values: 'static'"),
        ("mnist", "valid", {}, "needs validation_size > 0"),
        ("mnist", "train", {"validation_size": 60_000}, "validation_size must be an integer in"),
        ("dsprites", "train", {"source": "web"}, "valid values: 'auto', 'render', 'download'"),
        ("dsprites_correlated", "train", {"remove_prob": 1.5}, "remove_prob must lie in"),
    ],
)
def test_bad_requests_get_clear_errors(tmp_path, name, split, options, message):
    # An empty data folder: every error must come before any file is needed.
    with pytest.raises(ValueError, match=message):
        data.load(name, split, data_dir=tmp_path, **options)
    assert not any(tmp_path.iterdir())


def test_missing_file_offline_names_file_url_and_folder(tmp_path, monkeypatch):
    key = "mnist/t10k-labels-idx1-ubyte.gz"
    unreachable = registry.RemoteFile("http://127.0.0.1:9/t10k-labels-idx1-ubyte.gz", registry.REGISTRY[key].sha256)
    monkeypatch.setitem(registry.REGISTRY, key, unreachable)
    monkeypatch.setitem(
        registry.REGISTRY, "mnist/t10k-images-idx3-ubyte.gz", registry.RemoteFile(unreachable.url, None)
    )
    with pytest.raises(FileNotFoundError) as raised:
        data.load("mnist", "test", data_dir=tmp_path)
    assert isinstance(raised.value, data.DataUnavailableError)
    message = str(raised.value)
    assert "t10k-images-idx3-ubyte.gz" in message and unreachable.url in message and str(tmp_path) in message
    assert not list(tmp_path.rglob("*.gz"))


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert data.resolve_data_dir().name == "echo_jax"


def test_environment_variable_points_at_the_shared_folder(shared_data, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(shared_data))
    assert len(data.load("mnist", "test")) == 10_000


def test_num_examples_keeps_a_fixed_random_subset_and_renders_only_it():
    load, dsprites = data.load, data.dsprites
    full = load("mnist_sample", "test", binarize="none")
    part = load("mnist_sample", "test", binarize="none", num_examples=100)
    again = load("mnist_sample", "test", binarize="none", num_examples=100)
    assert len(part) == 100 and np.array_equal(part.images, again.images)
    rows = [int(np.flatnonzero((full.images == img).all(axis=(1, 2, 3)))[0]) for img in part.images[:20]]
    assert rows == sorted(rows) and rows[-1] > 20  # in dataset order, not the first 20
    np.testing.assert_array_equal(part.labels[:20], full.labels[rows])
    sprites = load("dsprites_correlated", "test", num_examples=50, source="render")
    assert len(sprites) == 50
    np.testing.assert_array_equal(sprites.images[..., 0], dsprites.render(sprites.factor_classes))
    keep = dsprites.correlated_keep_mask()
    assert not keep[dsprites.factor_index(sprites.factor_classes)].any()  # all held-out combinations
    with pytest.raises(ValueError, match="num_examples"):
        load("mnist_sample", "test", num_examples=0)
