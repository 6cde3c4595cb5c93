"""`load(..., source="tfds")`: tfds-prepared datasets read back without TensorFlow, in source order.

Tiny datasets are prepared in the tests by builders with the real builders' names, versions, splits,
feature keys and example keys, but with features that need no TensorFlow to write (tfds.features.Tensor
where the real builders have Image). Their content is generated here, so every value read back is
compared with an array computed independently of the code under test. Where TensorFlow is installed,
the real tfds builders are also prepared from the files in ../shared/data and compared with the
built-in readers.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from echo_jax import data  # noqa: E402
from echo_jax.data import dsprites, readers, registry, tfds_source  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None
MNIST_SIZES = {"train": 40, "test": 12}
BINARIZED_SIZES = {"train": 30, "validation": 10, "test": 10}
# Tiny Omniglot: characters (label) by split, two alphabets, 20 drawers each.
OMNIGLOT_CHARACTERS = {"train": [("Alpha", 0), ("Alpha", 1), ("Beta", 0)], "test": [("Gamma", 0), ("Gamma", 1)]}
DSPRITES_SIZE = 50


# ----------------------------------------------------------------------------------------- tiny builders


def make_builder(builder_name: str, version: str, features: dict, examples: dict) -> type:
    """A tfds builder class named `builder_name` that writes `examples` (split -> [(key, record)])."""

    class TinyBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = builder_name
        VERSION = tfds.core.Version(version)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in examples}

        def _generate_examples(self, split):
            yield from examples[split]

    return TinyBuilder


def prepare(builder_class: type, data_dir: Path, file_format: str = "array_record") -> None:
    builder = builder_class(data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    )


def mnist_arrays(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (N, 28, 28) uint8 images and (N,) labels, in source order."""
    rng = np.random.default_rng(seed)
    return {
        split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n))
        for split, n in MNIST_SIZES.items()
    }


def mnist_builder(name: str, arrays: dict) -> type:
    features = {
        "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
        "label": tfds.features.ClassLabel(num_classes=10),
    }
    # As the real builder: the key is the index in the idx file.
    examples = {
        split: [(i, {"image": images[i, ..., None], "label": int(labels[i])}) for i in range(len(images))]
        for split, (images, labels) in arrays.items()
    }
    return make_builder(name, "3.0.1", features, examples)


def binarized_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {split: (rng.random((n, 28, 28)) < 0.3).astype(np.uint8) for split, n in BINARIZED_SIZES.items()}


def omniglot_drawings() -> dict[str, np.ndarray]:
    """split -> (characters, 20, 105, 105) bool, True = white background, drawer order."""
    rng = np.random.default_rng(4)
    return {split: rng.random((len(chars), 20, 105, 105)) < 0.8 for split, chars in OMNIGLOT_CHARACTERS.items()}


def omniglot_builder(drawings: dict[str, np.ndarray]) -> type:
    alphabets = sorted({alphabet for chars in OMNIGLOT_CHARACTERS.values() for alphabet, _ in chars})
    features = {
        "image": tfds.features.Tensor(shape=(105, 105, 3), dtype=np.uint8),
        "alphabet": tfds.features.ClassLabel(names=alphabets),
        "alphabet_char_id": np.int64,
        "label": tfds.features.ClassLabel(num_classes=5),
    }
    examples, label = {}, 0
    for split, chars in OMNIGLOT_CHARACTERS.items():
        examples[split] = []
        for (alphabet, char_id), character in zip(chars, drawings[split]):
            for drawer in range(20):
                # White is 1 where Pillow decodes the real 1-bit PNGs, 255 where TensorFlow does: one of each.
                white = 1 if split == "train" else 255
                rgb = np.repeat(np.where(character[drawer], white, 0).astype(np.uint8)[..., None], 3, axis=-1)
                # The real builder's key: "{alphabet}_{character id}_{file name}", file XXXX_YY.png.
                key = f"{alphabet}_{char_id}_{label + 1:04d}_{drawer + 1:02d}.png"
                record = {"image": rgb, "alphabet": alphabet, "alphabet_char_id": char_id, "label": label}
                examples[split].append((key, record))
            label += 1
    return make_builder("omniglot", "3.0.0", features, examples)


def dsprites_builder(images: np.ndarray, key_offset: int = 0) -> type:
    """dsprites 2.0.0 holding the first len(images) grid combinations, keyed by grid index + key_offset."""
    names = ("shape", "scale", "orientation", "x_position", "y_position")
    features = {"image": tfds.features.Tensor(shape=(64, 64, 1), dtype=np.uint8)}
    for name, size in zip(names, dsprites.FACTOR_SIZES):
        features[f"label_{name}"] = tfds.features.ClassLabel(num_classes=size)
        features[f"value_{name}"] = tfds.features.Tensor(shape=[], dtype=np.float32)
    classes = dsprites.all_factor_classes()[: len(images)]
    examples = []
    for i, image in enumerate(images):
        record = {"image": image[..., None]}
        for k, name in enumerate(names):
            record[f"label_{name}"] = int(classes[i, k])
            record[f"value_{name}"] = np.float32(dsprites.FACTOR_VALUES[k][classes[i, k]])
        examples.append(((i + key_offset) % len(images), record))
    return make_builder("dsprites", "2.0.0", features, {"train": examples})


def dsprites_images() -> np.ndarray:
    return (np.random.default_rng(5).random((DSPRITES_SIZE, 64, 64)) < 0.1).astype(np.uint8)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> Path:
    """A tfds data folder with tiny mnist, fashion_mnist, binarized_mnist, omniglot and dsprites."""
    tfds.disable_progress_bar()
    folder = tmp_path_factory.mktemp("tfds")
    prepare(mnist_builder("mnist", mnist_arrays(1)), folder)
    prepare(mnist_builder("fashion_mnist", mnist_arrays(2)), folder)
    features = {"image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8)}
    examples = {
        split: [(i, {"image": image[..., None]}) for i, image in enumerate(images)]
        for split, images in binarized_arrays().items()
    }
    prepare(make_builder("binarized_mnist", "1.0.0", features, examples), folder)
    prepare(omniglot_builder(omniglot_drawings()), folder)
    prepare(dsprites_builder(dsprites_images()), folder)
    return folder


# ----------------------------------------------------------------------------------------- order


def test_tfds_stores_examples_in_hashed_order_and_load_restores_the_source_order(tfds_dir):
    images, labels = mnist_arrays(1)["train"]
    stored = tfds.builder_from_directory(str(tfds_dir / "mnist" / "3.0.1")).as_data_source(split="train")
    stored_images = np.stack([record["image"][..., 0] for record in stored])
    # Not the source order (else restoring it would be untested) ...
    assert not np.array_equal(stored_images, images)
    # ... but the order of md5(split name + key), computed here from hashlib alone.
    by_hash = sorted(range(len(images)), key=lambda i: hashlib.md5(b"train" + str(i).encode()).hexdigest())
    np.testing.assert_array_equal(stored_images, images[by_hash])
    np.testing.assert_array_equal(tfds_source.hashed_order("train", range(len(images))), by_hash)
    restored = data.load("mnist", "train", source="tfds", data_dir=tfds_dir, binarize="none")
    np.testing.assert_array_equal(restored.images[..., 0], images.astype(np.float32) / 255)
    np.testing.assert_array_equal(restored.labels, labels)


# ----------------------------------------------------------------------------------------- each dataset


@pytest.mark.parametrize("name, seed", [("mnist", 1), ("fashion_mnist", 2)])
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_family_as_the_builtin_reader_serves_it(tfds_dir, name, seed, split):
    images, labels = mnist_arrays(seed)[split]
    grey = images.astype(np.float32) / np.float32(255.0)
    dynamic = data.load(name, split, source="tfds", data_dir=tfds_dir)
    assert (dynamic.name, dynamic.split, dynamic.binarize) == (name, split, "dynamic")
    assert dynamic.images.shape == (len(images), 28, 28, 1) and dynamic.images.dtype == np.float32
    assert dynamic.labels.dtype == np.int64 and dynamic.factor_classes is None
    np.testing.assert_array_equal(dynamic.images[..., 0], grey)
    np.testing.assert_array_equal(dynamic.labels, labels)
    threshold = data.load(name, split, source="tfds", data_dir=tfds_dir, binarize="threshold")
    np.testing.assert_array_equal(threshold.images[..., 0], (grey >= 0.5).astype(np.float32))


def test_validation_size_holds_out_the_last_training_images(tfds_dir):
    images, labels = mnist_arrays(2)["train"]
    train = data.load("fashion_mnist", "train", source="tfds", data_dir=tfds_dir, validation_size=6, binarize="none")
    valid = data.load("fashion_mnist", "valid", source="tfds", data_dir=tfds_dir, validation_size=6, binarize="none")
    np.testing.assert_array_equal(train.images[..., 0] * 255, images[:-6])
    np.testing.assert_array_equal(valid.images[..., 0] * 255, images[-6:])
    np.testing.assert_array_equal(valid.labels, labels[-6:])


def test_num_examples_takes_the_same_subset_as_the_builtin_readers(tfds_dir):
    images, _ = mnist_arrays(1)["train"]
    subset = data.load("mnist", "train", source="tfds", data_dir=tfds_dir, num_examples=7, binarize="none")
    # The built-in rule: a sorted random choice with seed 0, over the examples in source order.
    chosen = np.sort(np.random.default_rng(0).choice(len(images), 7, replace=False))
    np.testing.assert_array_equal(subset.images[..., 0] * 255, images[chosen])


@pytest.mark.parametrize("split, tfds_split", [("train", "train"), ("valid", "validation"), ("test", "test")])
def test_binary_mnist(tfds_dir, split, tfds_split):
    dataset = data.load("binary_mnist", split, source="tfds", data_dir=tfds_dir)
    assert (dataset.binarize, dataset.labels, dataset.images.dtype) == ("static", None, np.float32)
    np.testing.assert_array_equal(dataset.images[..., 0], binarized_arrays()[tfds_split])


def test_omniglot_restores_characters_and_drawers(tfds_dir):
    drawings = np.concatenate(list(omniglot_drawings().values()))  # label order: train characters, then test
    train = data.load("omniglot", "train", source="tfds", data_dir=tfds_dir, binarize="none")
    test = data.load("omniglot", "test", source="tfds", data_dir=tfds_dir, binarize="none")
    assert train.images.shape == (5 * 15, 28, 28, 1) and test.images.shape == (5 * 5, 28, 28, 1)
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(5), 15))
    np.testing.assert_array_equal(test.labels, np.repeat(np.arange(5), 5))
    for character in range(5):
        for drawer in range(20):
            # Area averaging by hand: 105 -> 420 by repeating pixels 4 times, then 15 x 15 block means.
            ink = (~drawings[character, drawer]).astype(np.float64)
            expected = np.repeat(np.repeat(ink, 4, 0), 4, 1).reshape(28, 15, 28, 15).mean(axis=(1, 3))
            served = train.images[character * 15 + drawer] if drawer < 15 else test.images[character * 5 + drawer - 15]
            np.testing.assert_allclose(served[..., 0], expected, atol=1e-5)


def test_dsprites_in_factor_order_with_classes_and_values(tfds_dir):
    images = dsprites_images()
    for split in ("train", "test"):  # the test split is the training set, as with the built-in reader
        dataset = data.load("dsprites", split, source="tfds", data_dir=tfds_dir)
        assert dataset.images.dtype == np.uint8 and dataset.images.shape == (DSPRITES_SIZE, 64, 64, 1)
        np.testing.assert_array_equal(dataset.images[..., 0], images)
        # Row-major over (3, 6, 40, 32, 32): the first 50 combinations vary posY, then posX.
        expected_classes = np.zeros((DSPRITES_SIZE, 5), np.int64)
        expected_classes[:, 3], expected_classes[:, 4] = np.divmod(np.arange(DSPRITES_SIZE), 32)
        np.testing.assert_array_equal(dataset.factor_classes, expected_classes)
        np.testing.assert_allclose(dataset.factor_values[:, 4], expected_classes[:, 4] / 31)
        np.testing.assert_allclose(dataset.factor_values[:, 1], 0.5)
    picked, classes = tfds_source.read_dsprites(str(tfds_dir), np.array([33, 2, 17]))
    np.testing.assert_array_equal(picked, images[[33, 2, 17]])
    np.testing.assert_array_equal(classes[:, 3:], [[1, 1], [0, 2], [0, 17]])


def test_dsprites_keyed_otherwise_is_refused(tmp_path):
    tfds.disable_progress_bar()
    prepare(dsprites_builder(dsprites_images()[:10], key_offset=1), tmp_path)
    with pytest.raises(readers.DataFormatError, match="factor classes"):
        data.load("dsprites", "train", source="tfds", data_dir=tmp_path)


# ----------------------------------------------------------------------------------------- errors


def test_an_unprepared_dataset_is_a_one_line_error_without_a_download(tmp_path):
    start = time.monotonic()
    with pytest.raises(data.DataUnavailableError) as error:
        data.load("omniglot", "train", source="tfds", data_dir=tmp_path)
    assert time.monotonic() - start < 5  # tfds, asked for it, would retry a download for minutes offline
    message = str(error.value)
    assert "\n" not in message and "tfds build omniglot" in message and "TensorFlow" in message
    assert str(tmp_path) in message and not any(tmp_path.iterdir())


def test_an_unknown_version_is_refused(tfds_dir, tmp_path):
    shutil.copytree(tfds_dir / "mnist" / "3.0.1", tmp_path / "mnist" / "4.0.0")
    with pytest.raises(readers.DataFormatError, match="3.0.1"):
        data.load("mnist", "test", source="tfds", data_dir=tmp_path)


def test_the_default_folder_is_tfds_own(tfds_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    monkeypatch.setenv(data.DATA_DIR_ENV, "/nonexistent")  # the echo-jax data folder plays no part
    assert len(data.load("mnist", "test", source="tfds")) == MNIST_SIZES["test"]


def test_source_values_are_checked():
    with pytest.raises(ValueError, match="'files', 'tfds'"):
        data.load("mnist", "train", source="bogus")
    with pytest.raises(ValueError, match="Unknown option"):
        data.load("mnist_sample", "train", source="tfds")


def test_tfrecord_data_needs_tensorflow_or_is_read_through_it(tfds_dir, tmp_path):
    expected = data.load("mnist", "test", source="tfds", data_dir=tfds_dir)
    if HAS_TENSORFLOW:
        prepare(mnist_builder("mnist", mnist_arrays(1)), tmp_path, file_format="tfrecord")
        served = data.load("mnist", "test", source="tfds", data_dir=tmp_path)
        np.testing.assert_array_equal(served.images, expected.images)
        np.testing.assert_array_equal(served.labels, expected.labels)
        return
    # Without TensorFlow no TFRecord can be written: relabel ArrayRecord data as TFRecord instead.
    copy = tmp_path / "mnist" / "3.0.1"
    shutil.copytree(tfds_dir / "mnist" / "3.0.1", copy)
    info = json.loads((copy / "dataset_info.json").read_text())
    info["fileFormat"] = "tfrecord"
    (copy / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(ImportError, match="only TensorFlow reads: pip install tensorflow"):
        data.load("mnist", "test", source="tfds", data_dir=tmp_path)


# ----------------------------------------------------------------------------------------- real builders


class LocalDownloads:
    """Stands in for tfds' download manager: each canonical URL -> a local copy of its (extracted) file."""

    def __init__(self, files: dict[str, Path]):
        self.files = files

    def download(self, urls: str | dict[str, str]) -> Path | dict[str, Path]:
        if isinstance(urls, str):
            return self.files[urls.rsplit("/", 1)[-1]]
        return {key: self.files[url.rsplit("/", 1)[-1]] for key, url in urls.items()}

    download_and_extract = download


def prepare_real(tfds_name: str, files: dict[str, Path], data_dir: Path) -> None:
    """Prepares the real tfds builder `tfds_name` (its code, features and keys) from local files."""
    real = tfds.builder_cls(tfds_name)

    class Local(real, skip_registration=True):
        name = tfds_name

        def _split_generators(self, dl_manager):
            return super()._split_generators(LocalDownloads(files))

    prepare(Local, data_dir)


def prepare_real_omniglot(extracted: Path, data_dir: Path) -> None:
    """Prepares the real omniglot builder with every split read from one extracted upstream zip.

    One zip holds few of the 50 alphabets and 1,623 characters the builder's ClassLabels expect, so
    `_split_generators` pads the names it sets; examples are still generated, encoded and keyed by the
    real builder's own `_generate_examples`.
    """
    real = tfds.builder_cls("omniglot")
    builder_module = sys.modules[real.__module__]

    class Local(real, skip_registration=True):
        name = "omniglot"

        def _split_generators(self, dl_manager):
            walked = list(builder_module._walk_omniglot_dir(str(extracted)))  # pylint: disable=protected-access
            alphabets = sorted({alphabet for alphabet, *_ in walked})
            padding = self.info.features["alphabet"].num_classes - len(alphabets)
            self.info.features["alphabet"].names = alphabets + [f"~unused{i:02d}" for i in range(padding)]
            label_names = [f"~unused{i:04d}" for i in range(self.info.features["label"].num_classes)]
            for alphabet, char_id, label, *_ in walked:
                label_names[label] = f"{alphabet}_{char_id}"
            self.info.features["label"].names = label_names
            return [
                tfds.core.SplitGenerator(name=split, gen_kwargs={"directory": extracted})
                for split in ("train", "test", "small1", "small2")
            ]

    prepare(Local, data_dir)


def needs_real_builders(test):
    """Marks a test of the real builders: slow, and skipped without TensorFlow or ../shared/data."""
    for mark in (
        pytest.mark.slow,
        pytest.mark.skipif(
            not HAS_TENSORFLOW, reason="preparing the real tfds builders (Image features) needs TensorFlow"
        ),
        pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent"),
    ):
        test = mark(test)
    return test


DSPRITES_REAL_ROWS = 2048


@pytest.fixture(scope="module")
def real_tfds_dir(tmp_path_factory) -> Path:
    """The real builders mnist, fashion_mnist, binarized_mnist (from ../shared/data), omniglot (every split
    from the upstream images_background_small1.zip) and dsprites (an upstream-layout hdf5 of rendered
    images, the first DSPRITES_REAL_ROWS combinations), prepared as ArrayRecord."""
    tfds.disable_progress_bar()
    work = tmp_path_factory.mktemp("real")
    prepared = work / "tfds"
    for name in ("mnist", "fashion_mnist"):
        files = {}
        for source in (SHARED_DATA / name).glob("*-ubyte.gz"):
            files[source.name] = work / name / source.stem  # what download_and_extract leaves
            files[source.name].parent.mkdir(exist_ok=True)
            files[source.name].write_bytes(gzip.decompress(source.read_bytes()))
        prepare_real(name, files, prepared)
    npz = np.load(SHARED_DATA / registry.BINARIZED_MNIST_NPZ)
    files = {}
    for split in ("train", "valid", "test"):
        amat = work / f"binarized_mnist_{split}.amat"
        amat.write_bytes(readers.amat_bytes(npz[split]))
        # The canonical upstream bytes, whoever wrote them.
        assert hashlib.sha256(amat.read_bytes()).hexdigest() == registry.REGISTRY[f"binarized_mnist/{amat.name}"].sha256
        files[amat.name] = amat
    prepare_real("binarized_mnist", files, prepared)
    extracted = work / "omniglot"
    shutil.unpack_archive(SHARED_DATA / "omniglot" / "images_background_small1.zip", extracted)
    prepare_real_omniglot(extracted, prepared)
    h5py = pytest.importorskip("h5py")
    classes = dsprites.all_factor_classes()[:DSPRITES_REAL_ROWS]
    with h5py.File(work / "dsprites.hdf5", "w") as upstream:  # the upstream layout: color first
        upstream["imgs"] = dsprites.render(classes)
        upstream["latents/classes"] = np.concatenate([np.zeros((len(classes), 1), np.int64), classes], axis=1)
        upstream["latents/values"] = np.concatenate(
            [np.ones((len(classes), 1)), dsprites.factor_values(classes)], axis=1
        )
    prepare_real(
        "dsprites", {"dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5?raw=true": work / "dsprites.hdf5"}, prepared
    )
    return prepared


@pytest.mark.parametrize(
    "name, split",
    [
        ("mnist", "train"),
        ("mnist", "test"),
        ("fashion_mnist", "train"),
        ("fashion_mnist", "test"),
        ("binary_mnist", "train"),
        ("binary_mnist", "valid"),
        ("binary_mnist", "test"),
    ],
)
@needs_real_builders
def test_real_builders_equal_the_builtin_readers(real_tfds_dir, name, split):
    builtin = data.load(name, split, data_dir=SHARED_DATA)
    served = data.load(name, split, source="tfds", data_dir=real_tfds_dir)
    assert (served.name, served.split, served.binarize) == (builtin.name, builtin.split, builtin.binarize)
    assert served.images.dtype == builtin.images.dtype
    np.testing.assert_array_equal(served.images, builtin.images)
    if builtin.labels is None:
        assert served.labels is None
    else:
        np.testing.assert_array_equal(served.labels, builtin.labels)


@needs_real_builders
def test_real_omniglot_builder_keys_give_back_the_drawers(real_tfds_dir):
    images, character_ids = readers.read_omniglot_zip(SHARED_DATA / "omniglot" / "images_background_small1.zip")
    characters = tfds_source.read_omniglot_characters("small1", str(real_tfds_dir))
    assert sorted(characters) == sorted(character_ids - 1)
    for drawings, character_id in zip(images, character_ids):
        np.testing.assert_array_equal(characters[character_id - 1], drawings)


@needs_real_builders
def test_real_dsprites_builder_in_factor_order(real_tfds_dir):
    images, classes = tfds_source.read_dsprites(str(real_tfds_dir))
    np.testing.assert_array_equal(classes, dsprites.all_factor_classes()[:DSPRITES_REAL_ROWS])
    np.testing.assert_array_equal(images, dsprites.render(classes))
