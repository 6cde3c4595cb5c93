"""Datasets prepared by TensorFlow Datasets (tfds), read back in their source order, without TensorFlow.

`echo_jax.data.load(name, split, source="tfds", data_dir=...)` reads the tfds builders ``mnist``,
``fashion_mnist``, ``binarized_mnist``, ``omniglot`` and ``dsprites`` from a tfds data folder (default
$TFDS_DATA_DIR, else ~/tensorflow_datasets) and returns the same arrays as the built-in readers.

Reading. ArrayRecord-prepared data is read with tfds' random-access data source (Pillow decodes the
images; no TensorFlow). TFRecord-prepared data, what most buckets hold, is read through
``builder.as_dataset``, which needs TensorFlow; without it the error says so. Nothing is ever
downloaded: a dataset that is not prepared is an error that says how to prepare it.

Order. tfds does not store a split in the order of its source files: it writes the examples sorted
by md5(split name + example key) (tensorflow_datasets/core/shuffle.py and hashing.py; tfds keeps that
hash fixed, since changing it would reorder every prepared dataset). The builders read here key their
examples by their index in the source files (mnist, fashion_mnist, binarized_mnist, dsprites) or by
the source file name (omniglot: ``{alphabet}_{character}_{XXXX}_{YY}.png``), so the stored position of
every source example can be computed, and this module returns the examples in source order. Subsets
(``num_examples``), ``validation_size`` and evaluation batches then pick the same examples as with the
built-in readers. Only builder versions whose keys are known are read (`KNOWN_VERSIONS`); dSprites
records also carry their factor classes, which are checked against the index they were restored to.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import numpy as np

from echo_jax.data import dsprites
from echo_jax.data.fetch import DataUnavailableError
from echo_jax.data.readers import OMNIGLOT_DRAWERS, DataFormatError

TFDS_DATA_DIR_ENV: Final = "TFDS_DATA_DIR"
# tfds builder -> versions whose example keys (and so whose source order) this module knows.
KNOWN_VERSIONS: Final[dict[str, tuple[str, ...]]] = {
    "mnist": ("3.0.1",),
    "fashion_mnist": ("3.0.1",),
    "binarized_mnist": ("1.0.0",),
    "omniglot": ("3.0.0",),
    "dsprites": ("2.0.0", "2.1.0"),
}
DSPRITES_FACTOR_FEATURES: Final = (
    "label_shape",
    "label_scale",
    "label_orientation",
    "label_x_position",
    "label_y_position",
)
# Records decoded per call to the data source: bounds the memory of decoded, not yet converted, images.
_CHUNK: Final = 4096
_VERSION_PATTERN: Final = re.compile(r"\d+\.\d+\.\d+")

Converter = Callable[[np.ndarray], np.ndarray]


def _tfds() -> Any:
    """The tensorflow_datasets module, or an ImportError that names the extra to install."""
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise ImportError(
            "source='tfds' needs tensorflow-datasets (TensorFlow is not needed to read ArrayRecord data): "
            "pip install 'echo-jax[tfds]'."
        ) from error
    return tfds


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """The tfds data folder: `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (as tfds itself).

    Args:
      data_dir: a local folder or a bucket URL (gs://...), or None.

    Returns:
      The folder as a string (a URL stays a URL).
    """
    folder = (
        os.fspath(data_dir) if data_dir is not None else os.environ.get(TFDS_DATA_DIR_ENV) or "~/tensorflow_datasets"
    )
    return folder if "://" in folder else os.path.expanduser(folder)


def _prepare_hint(tfds_name: str, data_dir: str) -> str:
    return (
        f"Prepare it once on a machine with internet and TensorFlow (preparing needs it; reading does not): "
        f"pip install tensorflow tensorflow-datasets && tfds build {tfds_name} --data_dir={data_dir} "
        f"--file_format=array_record"
    )


def prepared_dir(tfds_name: str, data_dir: str) -> Any:
    """The folder of the newest prepared version of a builder whose keys are known.

    Only the folder is listed: tfds is never asked for a dataset that is not there (offline it would
    retry a download for minutes before failing).

    Args:
      tfds_name: a key of `KNOWN_VERSIONS`.
      data_dir: the tfds data folder.

    Returns:
      An `etils.epath.Path` to ``data_dir/tfds_name/<version>``.

    Raises:
      DataUnavailableError: no version of the dataset is prepared there.
      DataFormatError: only versions whose example keys are unknown are prepared there.
    """
    _tfds()  # etils.epath comes with tensorflow-datasets.
    from etils import epath  # pylint: disable=import-outside-toplevel

    root = epath.Path(data_dir) / tfds_name
    # A folder such as 3.0.1 without dataset_info.json is unfinished (tfds renames it into place when done).
    versions = sorted(
        (
            path.name
            for path in (root.iterdir() if root.is_dir() else ())
            if _VERSION_PATTERN.fullmatch(path.name) and (path / "dataset_info.json").exists()
        ),
        key=lambda version: tuple(int(part) for part in version.split(".")),
    )
    if not versions:
        raise DataUnavailableError(
            f"The tfds dataset {tfds_name!r} is not prepared in {data_dir} "
            f"(no {tfds_name}/<version>/dataset_info.json) "
            f"and echo-jax never downloads through tfds. {_prepare_hint(tfds_name, data_dir)}"
        )
    known = [version for version in versions if version in KNOWN_VERSIONS[tfds_name]]
    if not known:
        raise DataFormatError(
            f"{root} holds version(s) {', '.join(versions)} of the tfds dataset {tfds_name!r}, whose example keys "
            f"echo-jax does not know, so it cannot restore their source order; prepare version "
            f"{' or '.join(KNOWN_VERSIONS[tfds_name])} (tfds build {tfds_name}:{KNOWN_VERSIONS[tfds_name][-1]} ...)."
        )
    return root / known[-1]


class PreparedSplit:
    """One split of a prepared tfds dataset, read by stored position.

    Attributes:
      builder: the read-only tfds builder of the prepared folder.
      split: the tfds split name.
      num_examples: examples in the split.
    """

    def __init__(self, builder_dir: Any, split: str):
        """Opens a split.

        Args:
          builder_dir: a prepared ``<data_dir>/<name>/<version>`` folder (see `prepared_dir`).
          split: a tfds split of it.

        Raises:
          DataFormatError: the split is not in the prepared dataset.
          ImportError: the split is stored as TFRecord and TensorFlow is not installed.
        """
        tfds = _tfds()
        self.builder = tfds.builder_from_directory(builder_dir)
        self.split = split
        if split not in self.builder.info.splits:
            raise DataFormatError(
                f"{builder_dir} has no split {split!r}; it has {', '.join(self.builder.info.splits)}."
            )
        self.num_examples = int(self.builder.info.splits[split].num_examples)
        try:
            self._source = self.builder.as_data_source(split=split)
        except NotImplementedError:  # no random-access format (ArrayRecord) among the prepared files
            self._source = None
            if importlib.util.find_spec("tensorflow") is None:
                file_format = getattr(self.builder.info.file_format, "value", "tfrecord")
                raise ImportError(
                    f"{builder_dir} is prepared as {file_format}, which only TensorFlow reads: pip install tensorflow, "
                    f"or prepare it as ArrayRecord (tfds build {self.builder.name} --file_format=array_record)."
                ) from None

    @property
    def disable_shuffling(self) -> bool:
        """Whether the examples are stored in key order rather than in hashed order."""
        return bool(self.builder.info.disable_shuffling)

    def _chunks(self, positions: np.ndarray) -> Iterator[tuple[slice, list[dict[str, Any]]]]:
        """(where in `positions`, the decoded records there) in chunks, from the ArrayRecord data source."""
        for start in range(0, len(positions), _CHUNK):
            window = slice(start, min(start + _CHUNK, len(positions)))
            yield window, self._source.__getitems__(positions[window].tolist())

    def _tfrecord_chunks(self, features: Sequence[str]) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        """The whole split in stored order, in chunks, through tf.data (TFRecord: sequential reads only)."""
        tfds = _tfds()
        # One file at a time, in order: the default interleaving would mix the shards.
        dataset = self.builder.as_dataset(
            split=self.split,
            batch_size=_CHUNK,
            shuffle_files=False,
            read_config=tfds.ReadConfig(interleave_cycle_length=1),
        )
        start = 0
        for batch in tfds.as_numpy(dataset):
            count = len(batch[features[0]])
            yield slice(start, start + count), {name: batch[name] for name in features}
            start += count

    def read(self, positions: np.ndarray, converters: dict[str, Converter]) -> dict[str, np.ndarray]:
        """Features of the examples at stored `positions`, each converted chunk by chunk.

        Args:
          positions: stored positions to read, in the order wanted.
          converters: feature name -> function applied to a stacked chunk of that feature (e.g. keep one
            image channel), so that only converted arrays are held for the whole read.

        Returns:
          feature name -> array whose first axis follows `positions`.
        """
        positions = np.asarray(positions, np.int64)
        if not len(positions):
            raise ValueError("No examples to read: positions is empty.")
        outputs: dict[str, np.ndarray] = {}

        def store(window: slice, name: str, values: np.ndarray, total: int) -> None:
            converted = converters[name](values)
            if name not in outputs:
                outputs[name] = np.empty((total, *converted.shape[1:]), converted.dtype)
            outputs[name][window] = converted

        if self._source is not None:
            try:
                self._source.__getitems__([int(positions[0])])  # opens the files that hold it
            except RuntimeError as error:
                if "://" not in str(self.builder.data_dir):
                    raise
                raise DataUnavailableError(
                    f"array_record could not open the ArrayRecord files in {self.builder.data_dir} ({error}); "
                    "it may not read bucket paths (google/array_record#120): copy the prepared folder to a local "
                    "disk and point data_dir there."
                ) from error
            for window, records in self._chunks(positions):
                for name in converters:
                    store(window, name, np.stack([np.asarray(record[name]) for record in records]), len(positions))
            return outputs
        for window, batch in self._tfrecord_chunks(tuple(converters)):
            for name in converters:
                store(window, name, batch[name], self.num_examples)
        return {name: values[positions] for name, values in outputs.items()}


def _key_bytes(key: int | str) -> bytes:
    """A key as tfds hashes it: ints as their decimal string, paths with forward slashes, UTF-8."""
    return (str(key) if isinstance(key, int) else key.replace("\\", "/")).encode("utf-8")


def hashed_order(split: str, keys: Sequence[int | str]) -> np.ndarray:
    """The order in which tfds stores examples with these keys: ascending md5(split name + key).

    Args:
      split: the tfds split name (tfds salts the hash with it).
      keys: the examples' keys.

    Returns:
      Indices into `keys`, in stored order.
    """
    salted = hashlib.md5(split.encode("utf-8"))

    def digest(key: int | str) -> bytes:
        md5 = salted.copy()
        md5.update(_key_bytes(key))
        return md5.digest()

    # 128-bit digests as two big-endian 64-bit words: sorting them sorts the hashes as integers.
    words = np.frombuffer(b"".join(map(digest, keys)), ">u8").reshape(-1, 2)
    return np.lexsort((words[:, 1], words[:, 0]))


@functools.cache
def _index_key_positions(split: str, num_examples: int, disable_shuffling: bool) -> np.ndarray:
    """Stored position of the examples keyed 0..num_examples-1 (cached: 737,280 hashes take ~1 s)."""
    if disable_shuffling:
        return np.arange(num_examples)
    positions = np.empty(num_examples, np.int64)
    positions[hashed_order(split, range(num_examples))] = np.arange(num_examples)
    positions.flags.writeable = False
    return positions


def read_indexed(
    tfds_name: str, split: str, data_dir: str, converters: dict[str, Converter], indices: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Features of a builder whose examples are keyed by their source index, in source order.

    Args:
      tfds_name: mnist, fashion_mnist, binarized_mnist or dsprites.
      split: the tfds split.
      data_dir: the tfds data folder.
      converters: feature name -> conversion of a stacked chunk (see `PreparedSplit.read`).
      indices: source indices to read (None: all, in order).

    Returns:
      feature name -> array over the examples, in source order (or in the order of `indices`).
    """
    prepared = PreparedSplit(prepared_dir(tfds_name, data_dir), split)
    positions = _index_key_positions(split, prepared.num_examples, prepared.disable_shuffling)
    if indices is not None:
        indices = np.asarray(indices, np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= prepared.num_examples):
            raise DataFormatError(
                f"The tfds split {tfds_name}/{split} holds {prepared.num_examples} examples; "
                f"index {indices.max()} asked."
            )
        positions = positions[indices]
    return prepared.read(positions, converters)


def _first_channel(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images[..., 0])


def _int64(values: np.ndarray) -> np.ndarray:
    return values.astype(np.int64)


def read_labelled_images(tfds_name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) uint8 images and (N,) int64 labels of mnist or fashion_mnist, in source order."""
    arrays = read_indexed(tfds_name, split, data_dir, {"image": _first_channel, "label": _int64})
    return arrays["image"], arrays["label"]


def read_binarized_mnist(split: str, data_dir: str) -> np.ndarray:
    """(N, 28, 28) uint8 in {0, 1}: one split of tfds' binarized_mnist, in the order of the .amat file."""
    images = read_indexed("binarized_mnist", split, data_dir, {"image": _first_channel})["image"]
    if images.max(initial=0) > 1:
        raise DataFormatError(
            f"tfds binarized_mnist/{split} in {data_dir} holds values above 1: not the binarized images."
        )
    return images


def read_dsprites(data_dir: str, indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """dSprites from tfds' dsprites (its only split, "train"), checked against their factor classes.

    Args:
      data_dir: the tfds data folder.
      indices: row-major factor indices to read (None: every example of the split, in order).

    Returns:
      (len, 64, 64) uint8 images in {0, 1}, and their (len, 5) int64 factor classes (shape, scale,
      orientation, posX, posY), which are the rows `indices` of `dsprites.all_factor_classes()`.

    Raises:
      DataFormatError: the records do not carry the expected factor classes (the examples are not keyed
        by their index) or the images are not binary.
    """
    converters = {"image": _first_channel, **{name: _int64 for name in DSPRITES_FACTOR_FEATURES}}
    arrays = read_indexed("dsprites", "train", data_dir, converters, indices)
    classes = np.stack([arrays[name] for name in DSPRITES_FACTOR_FEATURES], axis=1)
    grid = dsprites.all_factor_classes()
    expected_classes = grid[: len(classes)] if indices is None else grid[indices]
    if classes.shape != expected_classes.shape or not np.array_equal(classes, expected_classes):
        raise DataFormatError(
            f"tfds dsprites in {data_dir}: the examples restored to row-major factor order do not carry the "
            "factor classes of that order, so its example keys are not the source indices."
        )
    if arrays["image"].max(initial=0) > 1:
        raise DataFormatError(f"tfds dsprites in {data_dir} holds image values above 1; dSprites is binary.")
    return arrays["image"], classes


def _white_background(images: np.ndarray) -> np.ndarray:
    """Omniglot's RGB renderings of 1-bit PNGs as booleans, True = white background (the repack's convention).

    Pillow decodes the 1-bit PNGs to 0/1, TensorFlow to 0/255: either way ink is 0.
    """
    return images[..., 0] != 0


def read_omniglot_characters(split: str, data_dir: str) -> dict[int, np.ndarray]:
    """The drawings of one split of tfds' omniglot, by character.

    Args:
      split: a tfds omniglot split ("train": images_background, "test": images_evaluation, "small1", "small2").
      data_dir: the tfds data folder.

    Returns:
      character label (file XXXX_YY.png has label XXXX - 1) -> (20, 105, 105) bool drawings, True = white
      background, in drawer order (drawer s is file YY = s + 1).

    Raises:
      DataFormatError: a character does not have 20 drawings.
    """
    prepared = PreparedSplit(prepared_dir("omniglot", data_dir), split)
    arrays = prepared.read(
        np.arange(prepared.num_examples),
        {"image": _white_background, "alphabet": _int64, "alphabet_char_id": _int64, "label": _int64},
    )
    alphabets = prepared.builder.info.features["alphabet"].names
    characters: dict[int, np.ndarray] = {}
    labels = arrays["label"]
    for label in np.unique(labels):
        stored = np.flatnonzero(labels == label)  # this character's examples, in stored order
        alphabet = alphabets[int(arrays["alphabet"][stored[0]])]
        character = int(arrays["alphabet_char_id"][stored[0]])
        if len(stored) != OMNIGLOT_DRAWERS:
            raise DataFormatError(
                f"tfds omniglot/{split} in {data_dir}: character {label} has {len(stored)} drawings, "
                f"not {OMNIGLOT_DRAWERS}."
            )
        # The builder keys a drawing by its file, "{alphabet}_{character}_{XXXX}_{YY}.png" (XXXX = label + 1,
        # YY = drawer + 1): ordering this character's 20 keys by hash gives the drawer of each stored example.
        keys = [f"{alphabet}_{character}_{label + 1:04d}_{drawer + 1:02d}.png" for drawer in range(OMNIGLOT_DRAWERS)]
        drawings = np.empty((OMNIGLOT_DRAWERS, *arrays["image"].shape[1:]), bool)
        drawings[hashed_order(split, keys)] = arrays["image"][stored]
        characters[int(label)] = drawings
    return characters


def read_omniglot_drawings(data_dir: str) -> np.ndarray:
    """All Omniglot drawings of tfds' omniglot ("train" = background, "test" = evaluation), in source order.

    Args:
      data_dir: the tfds data folder.

    Returns:
      (characters, 20, 105, 105) bool, True = white background, ink = False (as the npz repack): row c is
      the character tfds labels c (file XXXX_YY.png has label XXXX - 1), drawer s is file YY = s + 1.

    Raises:
      DataFormatError: a character lacks drawings, or the labels are not 0..characters-1.
    """
    characters = {**read_omniglot_characters("train", data_dir), **read_omniglot_characters("test", data_dir)}
    if sorted(characters) != list(range(len(characters))):
        raise DataFormatError(f"tfds omniglot in {data_dir}: the character labels are not 0..{len(characters) - 1}.")
    return np.stack([characters[label] for label in range(len(characters))])
