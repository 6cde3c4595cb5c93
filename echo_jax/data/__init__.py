"""Datasets of the Echo noise experiments as numpy arrays, and the batches that feed training.

    from echo_jax import data
    train = data.load("mnist", "train")               # dynamic binarization by default
    for batch in data.batches(train, 100, seed=0, epoch=0):
        ...                                           # (100, 28, 28, 1) float32 in {0, 1}

Files come from the data folder (`data_dir`, else $ECHO_JAX_DATA_DIR, else a per-user cache) and are
downloaded there, with checksums, when missing. dSprites is rendered procedurally unless the upstream
file is present; `mnist_sample` ships with the package. ``load(..., source="tfds")`` reads the same
datasets, in the same order, from a tfds data folder where TensorFlow Datasets prepared them
(`echo_jax.data.tfds_source`; ``pip install 'echo-jax[tfds]'``).
"""

from echo_jax.data import dsprites, tfds_source
from echo_jax.data.datasets import BINARIZATIONS, ArrayDataset, available, load, mnist_sample_path
from echo_jax.data.fetch import (
    DATA_DIR_ENV,
    ChecksumMismatchError,
    DataUnavailableError,
    fetch,
    read_verified,
    resolve_data_dir,
)
from echo_jax.data.iterate import batches, epoch_permutation, eval_batches, num_batches
from echo_jax.data.readers import DataFormatError

__all__ = [
    "ArrayDataset",
    "BINARIZATIONS",
    "ChecksumMismatchError",
    "DATA_DIR_ENV",
    "DataFormatError",
    "DataUnavailableError",
    "available",
    "batches",
    "dsprites",
    "epoch_permutation",
    "eval_batches",
    "fetch",
    "load",
    "mnist_sample_path",
    "num_batches",
    "read_verified",
    "resolve_data_dir",
    "tfds_source",
]
