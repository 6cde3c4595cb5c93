"""`load(name, split)`: every dataset of the paper as numpy arrays, from one entry point.

Each dataset is read from its canonical files, or with ``source="tfds"`` from a dataset prepared by
TensorFlow Datasets (`echo_jax.data.tfds_source`): the same arrays, in the same order, either way.
Images are (N, H, W, 1): float32 in [0, 1], or uint8 in {0, 1} for dSprites (737,280 images would
take 12 GB as float32). With ``binarize="dynamic"`` the images hold grey values and every batch served
by `echo_jax.data.batches` is a fresh Bernoulli draw from them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np

from echo_jax.data import dsprites, readers, tfds_source
from echo_jax.data.fetch import check_sha256, fetch, is_present, read_verified, resolve_data_dir
from echo_jax.data.registry import (
    BINARIZED_MNIST_NPZ,
    DSPRITES_FILES,
    MNIST_SAMPLE_FILE,
    MNIST_SAMPLE_SHA256,
    OMNIGLOT_NPZ,
    OMNIGLOT_NPZ_CONTENT_SHA256,
    REGISTRY,
)

BINARIZATIONS: Final = ("none", "static", "dynamic", "threshold")
# The `source` option value that reads a tfds-prepared dataset instead of the canonical files.
TFDS: Final = "tfds"
# Images of the embedded sample: the first 9,000 MNIST training digits train, the next 1,000 test.
MNIST_SAMPLE_TRAIN_SIZE: Final = 9_000


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """One split of a dataset, in memory.

    Attributes:
      name: the dataset name given to `load`.
      split: the split name.
      images: (N, H, W, 1) float32 in [0, 1], or uint8 in {0, 1} (dSprites).
      labels: (N,) int64 class labels, or None where the dataset has none.
      binarize: "none" (served as stored), "static" (a fixed binarization, stored), "threshold"
        (stored as x >= 0.5), or "dynamic" (grey values stored, a Bernoulli draw per served batch).
      factor_classes: (N, 5) int64 dSprites factor indices, else None.
      factor_values: (N, 5) float64 dSprites factor values, else None.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray | None
    binarize: str
    factor_classes: np.ndarray | None = None
    factor_values: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 1)."""
        return tuple(self.images.shape[1:])


@dataclasses.dataclass(frozen=True)
class _Spec:
    loader: Callable[..., ArrayDataset]
    splits: tuple[str, ...]
    # option name -> (default, allowed values or None for "checked by the loader").
    options: dict[str, tuple[Any, tuple[Any, ...] | None]]


def _grey(name: str, split: str, images_uint8: np.ndarray, labels: np.ndarray | None, binarize: str) -> ArrayDataset:
    """Scale uint8 greys to [0, 1] and apply a load-time binarization."""
    images = images_uint8.astype(np.float32) / np.float32(255.0)
    return _finish(name, split, images, labels, binarize)


def _finish(name: str, split: str, images: np.ndarray, labels: np.ndarray | None, binarize: str) -> ArrayDataset:
    if binarize == "threshold":
        images = (images >= 0.5).astype(np.float32)
    images = np.ascontiguousarray(images[..., None])
    images.flags.writeable = False
    return ArrayDataset(name, split, images, None if labels is None else labels.astype(np.int64), binarize)


_IDX_TRAIN_SIZE: Final = 60_000


def _check_validation_size(split: str, validation_size: int) -> None:
    if not isinstance(validation_size, int) or not 0 <= validation_size < _IDX_TRAIN_SIZE:
        raise ValueError(f"validation_size must be an integer in [0, {_IDX_TRAIN_SIZE}), got {validation_size!r}.")
    if split == "valid" and validation_size == 0:
        raise ValueError("split='valid' needs validation_size > 0 (the last images of the training set are held out).")


def _load_idx_dataset(
    name: str, folder: str, split: str, data_dir: Path | str, binarize: str, validation_size: int, source: str
) -> ArrayDataset:
    _check_validation_size(split, validation_size)
    if source == TFDS:
        images, labels = tfds_source.read_labelled_images(name, "test" if split == "test" else "train", data_dir)
    else:
        prefix = "t10k" if split == "test" else "train"
        images = readers.parse_idx(read_verified(f"{folder}/{prefix}-images-idx3-ubyte.gz", data_dir), f"{name} images")
        labels = readers.parse_idx(read_verified(f"{folder}/{prefix}-labels-idx1-ubyte.gz", data_dir), f"{name} labels")
    if split != "test":
        if validation_size >= len(images):  # a small tfds-prepared split
            raise ValueError(
                f"validation_size {validation_size} leaves none of the {len(images)} {name} training images."
            )
        keep = (
            slice(len(images) - validation_size, None) if split == "valid" else slice(0, len(images) - validation_size)
        )
        images, labels = images[keep], labels[keep]
    return _grey(name, split, images, labels, binarize)


def _load_mnist(split: str, data_dir: Path | str, binarize: str, validation_size: int, source: str) -> ArrayDataset:
    return _load_idx_dataset("mnist", "mnist", split, data_dir, binarize, validation_size, source)


def _load_fashion_mnist(
    split: str, data_dir: Path | str, binarize: str, validation_size: int, source: str
) -> ArrayDataset:
    return _load_idx_dataset("fashion_mnist", "fashion_mnist", split, data_dir, binarize, validation_size, source)


def _load_binary_mnist(split: str, data_dir: Path | str, binarize: str, source: str) -> ArrayDataset:
    if source == TFDS:
        images = tfds_source.read_binarized_mnist("validation" if split == "valid" else split, data_dir)
        return _finish("binary_mnist", split, images.astype(np.float32), None, binarize)
    amat_key = f"binarized_mnist/binarized_mnist_{split}.amat"
    repack = data_dir / BINARIZED_MNIST_NPZ
    if is_present(repack) and not is_present(data_dir / amat_key):
        images = readers.read_binarized_mnist_npz(repack)[split]
        # The repack is trusted only if it writes back to the canonical .amat bytes.
        check_sha256(
            hashlib.sha256(readers.amat_bytes(images)).hexdigest(),
            REGISTRY[amat_key].sha256,
            f"The {split!r} split of {repack} (as .amat text)",
            f"It is not the canonical binarized MNIST: delete it to download {REGISTRY[amat_key].url}.",
        )
    else:
        path = fetch(amat_key, data_dir)
        with readers.reading(path):
            content = path.read_bytes()
        images = readers.parse_amat(content, amat_key)
    return _finish("binary_mnist", split, images.reshape(-1, 28, 28).astype(np.float32), None, binarize)


@functools.cache
def _omniglot_28x28(data_dir: Path) -> np.ndarray:
    """All 1,623 x 20 Omniglot images as (1623, 20, 28, 28) float32 ink in [0, 1]."""
    halves = []
    for half in ("background", "evaluation"):
        repack = data_dir / OMNIGLOT_NPZ[half]
        if is_present(repack):
            background = readers.read_omniglot_npz(repack)
            check_sha256(
                hashlib.sha256(np.packbits(background).tobytes()).hexdigest(),
                OMNIGLOT_NPZ_CONTENT_SHA256[half],
                f"The drawings in {repack}",
                f"It is not the canonical Omniglot: delete it to download omniglot/images_{half}.zip.",
            )
        else:
            background, _ = readers.read_omniglot_zip(fetch(f"omniglot/images_{half}.zip", data_dir))
        halves.append(background)
    counts = tuple(len(half) for half in halves)
    if counts != (964, 659):
        raise readers.DataFormatError(f"Omniglot must have 964 background and 659 evaluation characters, got {counts}.")
    return _downsample_omniglot(np.concatenate(halves))


@functools.cache
def _tfds_omniglot_28x28(data_dir: str) -> np.ndarray:
    """As `_omniglot_28x28`, from the drawings of tfds' omniglot."""
    return _downsample_omniglot(tfds_source.read_omniglot_drawings(data_dir))


def _downsample_omniglot(drawings: np.ndarray) -> np.ndarray:
    """(characters, 20, 105, 105) bool drawings, True = background, as (characters, 20, 28, 28) float32 ink."""
    weights = readers.area_downsample_matrix(readers.OMNIGLOT_SIZE, 28).astype(np.float32)
    small = np.empty((*drawings.shape[:2], 28, 28), np.float32)
    # In chunks of characters: the 105x105 float copies of all drawings would take 1.4 GB.
    for start in range(0, len(drawings), 128):
        ink = 1.0 - drawings[start : start + 128].astype(np.float32)
        small[start : start + 128] = weights @ ink @ weights.T
    return np.clip(small, 0.0, 1.0)


def _load_omniglot(split: str, data_dir: Path | str, binarize: str, source: str) -> ArrayDataset:
    if source == "chardata":
        train, test = readers.read_chardata(fetch("omniglot/chardata.mat", data_dir))
        return _finish("omniglot", split, train if split == "train" else test, None, binarize)
    images = _tfds_omniglot_28x28(data_dir) if source == TFDS else _omniglot_28x28(data_dir)
    # Drawers 0-14 of every character train, 15-19 test (24,345 / 8,115 images).
    drawers = slice(0, 15) if split == "train" else slice(15, 20)
    chosen = images[:, drawers]
    labels = np.repeat(np.arange(len(images)), chosen.shape[1])
    return _finish("omniglot", split, chosen.reshape(-1, 28, 28), labels, binarize)


@functools.cache
def _dsprites_all(data_dir: Path | str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """All dSprites images and factor classes, read-only, from the upstream file, tfds, or rendered."""
    if source == TFDS:
        images, classes = tfds_source.read_dsprites(data_dir)
        images.flags.writeable = False
        classes.flags.writeable = False
        return images, classes
    classes = dsprites.all_factor_classes()
    if source == "download":
        path = fetch(DSPRITES_FILES[1], data_dir)
    elif source == "auto":
        present = [name for name in DSPRITES_FILES if is_present(data_dir / name)]
        # fetch checks a present file against its registered sha256 (the hdf5; upstream never published the npz's).
        path = fetch(present[0], data_dir) if present else None
    else:
        path = None
    if path is None:
        images = dsprites.render_all()
    else:
        images, file_classes = readers.read_dsprites_file(path)
        if not np.array_equal(file_classes, classes):
            raise readers.DataFormatError(
                f"{path} must hold all {dsprites.NUM_IMAGES:,} dSprites images in row-major factor order."
            )
    images.flags.writeable = False
    classes.flags.writeable = False
    return images, classes


def _dsprites_dataset(name: str, split: str, images: np.ndarray, classes: np.ndarray) -> ArrayDataset:
    values = dsprites.factor_values(classes)
    return ArrayDataset(name, split, images[..., None], None, "none", classes, values)


def random_subset(num_total: int, num_examples: int | None) -> np.ndarray | None:
    """Sorted indices of a fixed random subset of `num_examples` out of `num_total` (None: all)."""
    if num_examples is not None and num_examples > num_total:
        raise ValueError(
            f"num_examples={num_examples} is more than the {num_total} examples there are; use at "
            f"most {num_total} (or None for all)"
        )
    if num_examples is None or num_examples == num_total:
        return None
    if num_examples < 1:
        raise ValueError(f"num_examples must be a positive number of examples, got {num_examples}.")
    return np.sort(np.random.default_rng(0).choice(num_total, num_examples, replace=False))


def _dsprites_images(name: str, split: str, data_dir: Path | str, source: str, chosen: np.ndarray) -> ArrayDataset:
    """The dSprites images of the boolean or index selection `chosen`, rendering (or reading from tfds)
    only those when no upstream file is used."""
    if source == TFDS:
        images, classes = tfds_source.read_dsprites(data_dir, np.arange(dsprites.NUM_IMAGES)[chosen])
        return _dsprites_dataset(name, split, images, classes)
    classes = dsprites.all_factor_classes()[chosen]
    upstream = source == "download" or (source == "auto" and any(is_present(data_dir / f) for f in DSPRITES_FILES))
    images = _dsprites_all(data_dir, source)[0][chosen] if upstream else dsprites.render(classes)
    return _dsprites_dataset(name, split, images, classes)


def _load_dsprites(split: str, data_dir: Path | str, source: str, num_examples: int | None) -> ArrayDataset:
    # As in the original, the test split is the training set itself.
    chosen = random_subset(dsprites.NUM_IMAGES, num_examples)
    if chosen is None:
        images, classes = _dsprites_all(data_dir, source)
        return _dsprites_dataset("dsprites", split, images, classes)
    return _dsprites_images("dsprites", split, data_dir, source, chosen)


def _load_dsprites_correlated(
    split: str,
    data_dir: Path | str,
    source: str,
    remove_prob: float,
    n_blocks: int,
    seed: int,
    num_examples: int | None,
) -> ArrayDataset:
    keep = dsprites.correlated_keep_mask(remove_prob, n_blocks, seed)
    chosen = np.flatnonzero(keep if split == "train" else ~keep)
    subset = random_subset(len(chosen), num_examples)
    return _dsprites_images(
        "dsprites_correlated", split, data_dir, source, chosen if subset is None else chosen[subset]
    )


def mnist_sample_path() -> Path:
    """Path of the embedded MNIST sample (package data)."""
    return Path(str(resources.files("echo_jax.data").joinpath(MNIST_SAMPLE_FILE)))


def _load_mnist_sample(split: str, data_dir: Path, binarize: str) -> ArrayDataset:
    del data_dir  # The sample ships inside the package.
    raw = mnist_sample_path().read_bytes()
    check_sha256(
        hashlib.sha256(raw).hexdigest(),
        MNIST_SAMPLE_SHA256,
        f"The embedded sample {mnist_sample_path()}",
        "The installed package is damaged: reinstall echo-jax.",
    )
    with np.load(mnist_sample_path()) as archive:
        images, labels = archive["images"], archive["labels"]
    keep = slice(0, MNIST_SAMPLE_TRAIN_SIZE) if split == "train" else slice(MNIST_SAMPLE_TRAIN_SIZE, None)
    return _grey("mnist_sample", split, images[keep], labels[keep], binarize)


_GREY_BINARIZATIONS: Final = ("dynamic", "threshold", "none")
_FILE_SOURCES: Final = ("files", TFDS)
_DSPRITES_SOURCES: Final = ("auto", "render", "download", TFDS)
_SPECS: Final[dict[str, _Spec]] = {
    "binary_mnist": _Spec(
        _load_binary_mnist,
        ("train", "valid", "test"),
        {"binarize": ("static", ("static",)), "source": ("files", _FILE_SOURCES)},
    ),
    "mnist": _Spec(
        _load_mnist,
        ("train", "valid", "test"),
        {
            "binarize": ("dynamic", _GREY_BINARIZATIONS),
            "validation_size": (0, None),
            "source": ("files", _FILE_SOURCES),
        },
    ),
    "fashion_mnist": _Spec(
        _load_fashion_mnist,
        ("train", "valid", "test"),
        {
            "binarize": ("dynamic", _GREY_BINARIZATIONS),
            "validation_size": (0, None),
            "source": ("files", _FILE_SOURCES),
        },
    ),
    "omniglot": _Spec(
        _load_omniglot,
        ("train", "test"),
        {"binarize": ("dynamic", _GREY_BINARIZATIONS), "source": ("originals", ("originals", "chardata", TFDS))},
    ),
    "dsprites": _Spec(_load_dsprites, ("train", "test"), {"source": ("auto", _DSPRITES_SOURCES)}),
    "dsprites_correlated": _Spec(
        _load_dsprites_correlated,
        ("train", "test"),
        {"source": ("auto", _DSPRITES_SOURCES), "remove_prob": (0.15, None), "n_blocks": (4, None), "seed": (42, None)},
    ),
    "mnist_sample": _Spec(_load_mnist_sample, ("train", "test"), {"binarize": ("dynamic", _GREY_BINARIZATIONS)}),
}


def available() -> tuple[str, ...]:
    """Names accepted by `load`."""
    return tuple(_SPECS)


def load(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    num_examples: int | None = None,
    **options: Any,
) -> ArrayDataset:
    """Load one split of a dataset.

    Datasets, splits and options (defaults first):

    - ``binary_mnist``: train/valid/test 50,000/10,000/10,000, the fixed Larochelle binarization;
      ``binarize="static"``.
    - ``mnist``, ``fashion_mnist``: train/test 60,000/10,000; ``binarize="dynamic"|"threshold"|"none"``
      (the original fed Fashion-MNIST grey values: "none"); ``validation_size=0`` (with n > 0, the
      last n training images become split "valid" and leave "train"; the original's Fashion-MNIST
      trained on the first 50,000: ``validation_size=10000``).
    - ``omniglot``: 28x28, ``source="originals"``: built from the original 105x105 drawings (ink = 1,
      area-downsampled, drawers 1-15 of every character train, 16-20 test: 24,345/8,115, labels =
      character index) - close to, not pixel-identical with, the IWAE file; ``source="chardata"``:
      the IWAE ``chardata.mat`` (24,345/8,070, no labels) the paper used. ``binarize`` as for MNIST
      (the original fed grey values: "none").
    - ``dsprites``: all 737,280 images with factor classes and values, for both "train" and "test"
      (the original evaluates on the training set); ``source="auto"`` reads the upstream npz/hdf5
      when it is in the data folder and renders otherwise, "render" always renders, "download"
      fetches the upstream hdf5 (needs h5py).
    - ``dsprites_correlated``: the original's correlated dSprites, ``remove_prob=0.15``,
      ``n_blocks=4``, ``seed=42``: "train" the kept images (124,800 with the defaults), "test" the
      removed ones; ``source`` as for dsprites.
    - ``mnist_sample``: 10,000 MNIST digits shipped in the package (the first 10,000 of the MNIST
      training set: 9,000 train, 1,000 test), no network or data folder needed; ``binarize`` as for
      MNIST.

    ``source="tfds"`` (every dataset but ``mnist_sample``; for the others ``source`` is "files") reads
    the tfds builder ``binarized_mnist``, ``mnist``, ``fashion_mnist``, ``omniglot`` (its original
    drawings, made into the images of ``source="originals"``) or ``dsprites`` from a tfds data folder
    where it is prepared, never downloading: the same images, labels and factors, restored to the
    source order (see `echo_jax.data.tfds_source`). ArrayRecord data needs only tensorflow-datasets
    (``pip install 'echo-jax[tfds]'``); TFRecord data also needs TensorFlow.

    Args:
      name: one of `available()`.
      split: a split of that dataset.
      data_dir: the data folder; default $ECHO_JAX_DATA_DIR, else a per-user cache. Missing files
        are downloaded into it. With ``source="tfds"``: the tfds data folder (a local path or a
        bucket URL), default $TFDS_DATA_DIR, else ~/tensorflow_datasets.
      num_examples: keep a fixed random subset of this many examples (in dataset order); dSprites then
        renders only those. None keeps the whole split.
      **options: dataset options, listed above.

    Returns:
      The split as an ArrayDataset.

    Raises:
      ValueError: for an unknown name, split, option or option value.
      DataUnavailableError: a needed file is missing and cannot be downloaded, or (tfds) the dataset
        is not prepared in the tfds data folder.
      ImportError: (tfds) tensorflow-datasets is not installed, or the data is TFRecord and
        TensorFlow is not installed.
      ChecksumMismatchError: a file is not the canonical data.
    """
    if name not in _SPECS:
        raise ValueError(f"Unknown dataset {name!r}; available: {', '.join(available())}.")
    spec = _SPECS[name]
    if split not in spec.splits:
        raise ValueError(f"Unknown split {split!r} for dataset {name!r}; valid splits: {', '.join(spec.splits)}.")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {', '.join(unknown)} for dataset {name!r}; valid options: "
            f"{', '.join(spec.options) or 'none'}."
        )
    resolved = {}
    for option, (default, allowed) in spec.options.items():
        value = options.get(option, default)
        if allowed is not None and value not in allowed:
            hint = " (the fixed binarization is dataset 'binary_mnist')" if value == "static" else ""
            raise ValueError(
                f"Invalid {option}={value!r} for dataset {name!r}; valid values: {', '.join(map(repr, allowed))}{hint}."
            )
        resolved[option] = value
    if num_examples is not None and (int(num_examples) != num_examples or num_examples < 1):
        raise ValueError(f"num_examples must be a positive number of examples, got {num_examples!r}.")
    if resolved.get("source") == TFDS:
        folder = tfds_source.resolve_data_dir(data_dir)
    else:
        folder = resolve_data_dir(data_dir).resolve()
    if name.startswith("dsprites"):
        return spec.loader(split, folder, num_examples=num_examples, **resolved)
    dataset = spec.loader(split, folder, **resolved)
    chosen = random_subset(len(dataset), num_examples)
    if chosen is None:
        return dataset
    take = lambda a: None if a is None else a[chosen]
    return dataclasses.replace(
        dataset,
        images=dataset.images[chosen],
        labels=take(dataset.labels),
        factor_classes=take(dataset.factor_classes),
        factor_values=take(dataset.factor_values),
    )
