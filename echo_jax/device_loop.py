"""The training split on the device and K updates per dispatch: the accelerators' training loop.

The host loop (`echo_jax.data.batches`) builds every batch in numpy and issues one jitted step per batch:
one Python dispatch and one host-to-device copy per step, which is what limits a small model on a GPU
or TPU. Here the training split is copied to the device(s) once (`DeviceData`, replicated over the
sweep's mesh), every batch is computed there from (data seed, epoch, step), and `make_multi_step` runs
``steps_per_call`` updates in one `lax.scan`, so the host only dispatches, logs and evaluates.

The data stream has the host loop's structure, drawn from another generator: each epoch visits the
split in a random order (`jax.random.permutation` of a key folded from (data seed, epoch)), in full
batches (the remainder dropped), and a dynamically binarized dataset gets a fresh Bernoulli draw per
(data seed, epoch, step). The host loop draws the same distributions from numpy's PCG64, so the two
loops see different batches: their results agree statistically, not bit for bit. Every model of a
sweep shares the stream (as in the host loop), so a step's batch is computed once for all of them.

Memory: the split is stored once per device in its compact form (binary images as uint8: MNIST's
60,000 digits take 47 MB, dSprites' 737,280 images 3 GB). `resolve_data_loop` keeps it off a device
it would crowd: with ``data_loop="auto"`` such a split is served by the host loop instead (logged);
``data_loop="device"`` then raises `MemoryError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

from echo_jax import defaults
from echo_jax.data.datasets import ArrayDataset

DATA_LOOPS: Final = defaults.CHOICES["data_loop"]
# Updates per dispatch unless the config says otherwise; a dispatch also ends at every log, checkpoint
# and epoch boundary, so the log interval (100 steps by default) usually bounds it first.
DEFAULT_STEPS_PER_CALL: Final = 100
# What "auto" picks on XLA:CPU. `python benchmarks/sweep.py --loops` measured the on-device loop (K = 30)
# at 1.04-1.27x the host loop's model-steps per second for the quick MLP and 1.01-1.26x for a tiny model
# (1 and 4 models, on a loaded 2-core machine: the spread between runs is as large as the gain), and at
# 0.84-0.98x with K = 1. A gain that small does not pay for what the host loop keeps on the CPU: its data
# stream (the CPU results already on record), and `should_stop` asked before every single update.
CPU_DATA_LOOP: Final = "host"
# The split may take at most this share of one device's memory; the rest is the models'.
MAX_DATA_FRACTION: Final = 0.5
# Independent streams of the data key (the tag is folded in before the counters).
_PERMUTATION_STREAM: Final = 0
_BINARIZATION_STREAM: Final = 1

TrainStep = Callable  # (state, batch, beta) -> (state, metrics), one model or a vmapped population


@flax.struct.dataclass
class DeviceData:
    """A training split resident on the device(s), and how batches are cut from it.

    Attributes:
      images: (N, H, W, 1) uint8 (binary images) or float32 (grey values), replicated over the mesh.
      key: the data stream's PRNG key, ``PRNGKey(data_seed)``.
      batch_size: images a batch (static).
      dynamic: whether every batch is a fresh Bernoulli draw from the grey values (static).
    """

    images: jax.Array
    key: jax.Array
    batch_size: int = flax.struct.field(pytree_node=False)
    dynamic: bool = flax.struct.field(pytree_node=False)

    @property
    def num_examples(self) -> int:
        return int(self.images.shape[0])

    @property
    def steps_per_epoch(self) -> int:
        """Full batches in one pass (the remainder is dropped, as in the host loop)."""
        return self.num_examples // self.batch_size


def _binary(dataset: ArrayDataset) -> bool:
    images = dataset.images
    if images.dtype == np.uint8:
        return True
    return dataset.binarize != "dynamic" and bool(np.all((images == 0) | (images == 1)))


def compact_images(dataset: ArrayDataset) -> np.ndarray:
    """The split's images as stored on the device: uint8 when every value is 0 or 1 (the batches are
    float32 with the same values), else float32."""
    if _binary(dataset):
        return dataset.images.astype(np.uint8, copy=False)
    return dataset.images.astype(np.float32, copy=False)


def data_bytes(dataset: ArrayDataset) -> int:
    """Bytes the split takes on each device (see `compact_images`)."""
    return int(dataset.images.size * (1 if _binary(dataset) else 4))


def resolve_data_loop(data_loop: str, split_bytes: int, capacity_bytes: int) -> str:
    """``host`` or ``device``: the loop a config's ``data_loop`` asks for, on this backend.

    Args:
      data_loop: ``auto`` (the device loop on accelerators, `CPU_DATA_LOOP` on the CPU, the host loop
        for a split that does not fit), ``host`` or ``device``.
      split_bytes: bytes of the split on each device (`data_bytes`).
      capacity_bytes: memory of one device (`echo_jax.sweep.device_memory_bytes`).

    Raises:
      ValueError: for an unknown data_loop.
      MemoryError: for ``device`` when the split takes more than `MAX_DATA_FRACTION` of a device.
    """
    if data_loop not in DATA_LOOPS:
        raise ValueError(f"unknown data_loop {data_loop!r}; choose one of {', '.join(DATA_LOOPS)}")
    if data_loop == "host":
        return "host"
    fits = split_bytes <= MAX_DATA_FRACTION * capacity_bytes
    if data_loop == "device" and not fits:
        raise MemoryError(
            f"the training split takes {split_bytes / 2**20:.0f} MiB, more than {MAX_DATA_FRACTION:.0%} of a "
            f"device's {capacity_bytes / 2**20:.0f} MiB; use data_loop='host' (or 'auto', which falls back to it)"
        )
    if not fits:
        logging.warning(
            "the training split (%.0f MiB) does not fit on the device beside the models: serving it from the host",
            split_bytes / 2**20,
        )
        return "host"
    if data_loop == "device":
        return "device"
    return CPU_DATA_LOOP if jax.default_backend() == "cpu" else "device"


def device_data(dataset: ArrayDataset, batch_size: int, seed: int, sharding=None) -> DeviceData:
    """Copies a split to the device(s): to `sharding` (replicated over a mesh) if given, else the default
    device. With several processes every process must pass the same split (as the host loop assumes)."""
    images = compact_images(dataset)
    if sharding is None:
        placed = jax.device_put(images)
    elif jax.process_count() > 1:
        placed = jax.make_array_from_process_local_data(sharding, images)
    else:
        placed = jax.device_put(images, sharding)
    key = jax.random.PRNGKey(seed)
    if sharding is not None:
        key = (
            jax.device_put(key, sharding)
            if jax.process_count() == 1
            else (jax.make_array_from_process_local_data(sharding, np.asarray(key)))
        )
    return DeviceData(images=placed, key=key, batch_size=batch_size, dynamic=dataset.binarize == "dynamic")


@jax.jit
def epoch_order(data: DeviceData, epoch) -> jax.Array:
    """(N,) int32: the order in which `epoch` visits the split, a function of (data seed, epoch) only."""
    key = jax.random.fold_in(jax.random.fold_in(data.key, _PERMUTATION_STREAM), epoch)
    return jax.random.permutation(key, data.num_examples).astype(jnp.int32)


def batch_of(data: DeviceData, order: jax.Array, epoch, step) -> jax.Array:
    """Batch `step` of `epoch` given the epoch's `order`, as float32 (B, H, W, 1); pure and traceable.

    A dynamically binarized split is drawn as Bernoulli(grey value) from a key folded from
    (data seed, epoch, step), so a batch depends only on those three numbers.
    """
    indices = lax.dynamic_slice_in_dim(order, step * data.batch_size, data.batch_size)
    images = jnp.take(data.images, indices, axis=0).astype(jnp.float32)
    if not data.dynamic:
        return images
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(data.key, _BINARIZATION_STREAM), epoch), step)
    return (jax.random.uniform(key, images.shape, jnp.float32) < images).astype(jnp.float32)


def batch_at(data: DeviceData, epoch: int, step: int) -> jax.Array:
    """Batch `step` of `epoch` (for tests and inspection; the training loop reuses one order per epoch)."""
    return batch_of(data, epoch_order(data, epoch), epoch, step)


def make_multi_step(train_step: TrainStep, steps_per_call: int) -> Callable:
    """`steps_per_call` updates in one `lax.scan`, on the batches that follow each other in an epoch.

    Args:
      train_step: ``(state, batch, beta) -> (state, metrics)``, for one model or (vmapped, the batch
        shared) for a population.
      steps_per_call: K, the scan's length (static: each K is its own compiled program).

    Returns:
      ``multi_step(state, beta, data, order, epoch, start) -> (state, metrics)``: updates with batches
      ``start .. start + K - 1`` of `epoch` (all inside the epoch: the caller ends a dispatch at the
      epoch's end) and returns the final state and the last update's metrics. `epoch` and `start` are
      traced, so one compile serves every dispatch of length K.
    """
    if not isinstance(steps_per_call, int) or steps_per_call < 1:
        raise ValueError(f"steps_per_call must be a positive integer, got {steps_per_call!r}")

    def multi_step(state, beta, data: DeviceData, order: jax.Array, epoch, start):
        def body(state, i):
            return train_step(state, batch_of(data, order, epoch, start + i), beta)

        state, metrics = lax.scan(body, state, jnp.arange(steps_per_call, dtype=jnp.int32))
        return state, jax.tree.map(lambda m: m[-1], metrics)

    return multi_step


def steps_to_boundary(step: int, boundaries: tuple[int, ...], end: int) -> int:
    """How many steps from `step` until the next multiple of any of `boundaries` or `end`, whichever comes
    first: the longest dispatch that crosses no log, checkpoint, evaluation or epoch boundary."""
    return min([end - step] + [b - step % b for b in boundaries])
