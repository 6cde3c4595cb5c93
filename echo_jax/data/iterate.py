"""Batches for training and evaluation: full batches only, reproducible from (seed, epoch, step).

Echo noise draws each example's noise from the other members of its batch, so every batch served is
full; the remainder of an epoch is dropped. A batch depends only on (seed, epoch, step): the epoch's
permutation comes from (seed, epoch) and a dynamic binarization from (seed, epoch, step), so a run
resumed at `start_step` sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import numpy as np

from echo_jax.data.datasets import ArrayDataset

# Independent random streams: the tag sits before the counters, so no two streams share a seed.
_PERMUTATION_STREAM: Final = 0
_BINARIZATION_STREAM: Final = 1
_EVAL_BINARIZATION_STREAM: Final = 2
# Evaluation binarizes with this fixed seed, so evaluation numbers are repeatable across runs.
EVAL_SEED: Final = 0


def num_batches(dataset: ArrayDataset, batch_size: int) -> int:
    """Full batches of `batch_size` in one pass over `dataset` (the remainder is dropped).

    Raises:
      ValueError: if batch_size is not a positive integer no larger than the dataset.
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size > len(dataset):
        raise ValueError(
            f"batch_size {batch_size} exceeds the {len(dataset)} images of {dataset.name}/{dataset.split}: "
            "use a smaller batch."
        )
    return len(dataset) // batch_size


def _check_counter(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")


def _serve(dataset: ArrayDataset, indices: np.ndarray | slice, rng_words: tuple[int, ...]) -> np.ndarray:
    """Gather a batch as float32, drawing a Bernoulli sample when binarization is dynamic."""
    images = dataset.images[indices]
    if dataset.binarize != "dynamic":
        return images.astype(np.float32)
    uniform = np.random.default_rng(rng_words).random(images.shape, dtype=np.float32)
    return (uniform < images).astype(np.float32)


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The order in which an epoch visits the examples, a function of (seed, epoch) only."""
    _check_counter("seed", seed)
    _check_counter("epoch", epoch)
    return np.random.default_rng((seed, _PERMUTATION_STREAM, epoch)).permutation(num_examples)


def batches(
    dataset: ArrayDataset, batch_size: int, *, seed: int, epoch: int, start_step: int = 0
) -> Iterator[np.ndarray]:
    """Shuffled full batches of one epoch, from `start_step` on.

    Args:
      dataset: the split to serve.
      batch_size: images a batch.
      seed: non-negative run seed.
      epoch: non-negative epoch number; each epoch has its own permutation.
      start_step: first batch to serve (to resume an interrupted epoch), in [0, num_batches].

    Yields:
      (batch_size, H, W, 1) float32 batches: values in {0, 1} for binary or dynamically binarized
      data (a fresh draw per (seed, epoch, step)), else grey values in [0, 1].

    Raises:
      ValueError: for a bad batch size, seed, epoch or start step (before any batch is served).
    """
    count = num_batches(dataset, batch_size)
    _check_counter("start_step", start_step)
    if start_step > count:
        raise ValueError(f"start_step {start_step} is past the {count} batches of an epoch.")
    order = epoch_permutation(len(dataset), seed=seed, epoch=epoch)
    return _iterate(dataset, batch_size, order, count, (seed, _BINARIZATION_STREAM, epoch), start_step)


def _iterate(
    dataset: ArrayDataset,
    batch_size: int,
    order: np.ndarray | None,
    count: int,
    rng_prefix: tuple[int, ...],
    start: int,
) -> Iterator[np.ndarray]:
    for step in range(start, count):
        window = slice(step * batch_size, (step + 1) * batch_size)
        yield _serve(dataset, window if order is None else order[window], (*rng_prefix, step))


def eval_batches(dataset: ArrayDataset, batch_size: int) -> Iterator[np.ndarray]:
    """The whole split in one fixed random order, in full batches, binarized (if dynamic) with a fixed seed.

    The order is shuffled (as the original shuffles its test set before evaluating) because Echo noise is
    built from the other members of a batch: a batch must be a sample of the split, not, say, one digit
    of binarized MNIST's test set, which is sorted by class.

    Args:
      dataset: the split to serve.
      batch_size: images a batch; the last len(dataset) % batch_size images are not served.

    Yields:
      (batch_size, H, W, 1) float32 batches, identical on every call.

    Raises:
      ValueError: for a bad batch size.
    """
    count = num_batches(dataset, batch_size)
    order = np.random.default_rng(EVAL_SEED).permutation(len(dataset))
    return _iterate(dataset, batch_size, order, count, (EVAL_SEED, _EVAL_BINARIZATION_STREAM), 0)
