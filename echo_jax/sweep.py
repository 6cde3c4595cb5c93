"""Many models at once: one per (beta, seed), trained on the same data stream in one program.

The training states are stacked on a leading model axis. How that axis meets the hardware is a strategy:

- ``vmap``: one jitted, vmapped step for all models; with several devices the model axis is sharded over
  a 1-D mesh (``jax.sharding.Mesh``/``NamedSharding``), padded to a multiple of the device count. This is
  what wins on accelerators, where one small model leaves the device mostly idle.
- ``sequential``: the same jitted single-model step issued for each model in turn. On a single CPU device a
  step is already compute-bound and a vmapped step measured slower than back-to-back steps.
- ``auto``: sequential on a single CPU device, vmap otherwise.

Either way there is one compile for the whole sweep, whatever the beta values: beta is a traced input.
Batches come from the host one step per dispatch (`Population.step`), or from a split resident on the
device(s), K steps per dispatch (`Population.device_data` and `Population.run_steps`; see
`echo_jax.device_loop`).
Several hosts: call ``jax.distributed.initialize()`` first; every process runs the same program on the
same (replicated) data stream, the mesh spans all processes' devices, and only process 0 writes files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from echo_jax import defaults, device_loop
from echo_jax.data.datasets import ArrayDataset
from echo_jax.identity import betas_of, runs_of  # noqa: F401 - a sweep's models; defined without jax, for validation
from echo_jax.networks import cpu_compiler_options

STRATEGIES = defaults.CHOICES["sweep_strategy"]


def device_memory_bytes() -> int:
    """Memory of one device: the allocator's limit on accelerators, available RAM on the CPU."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def model_bytes(train_step: Callable, init: Callable, sample_batch: jax.Array, strategy: str = "auto") -> int:
    """Device memory one more model costs: its state in and out and its step's temporaries (from XLA's
    memory analysis of the compiled single-model step); back-to-back steps keep only the states resident."""
    state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
        jax.eval_shape(init, jax.ShapeDtypeStruct((1, 2), jnp.uint32)),
    )
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    if resolve_strategy(strategy) == "sequential":
        return state_bytes
    step = jax.jit(train_step, compiler_options=cpu_compiler_options())
    analysis = step.lower(state, sample_batch, jnp.float32(1.0)).compile().memory_analysis()
    temp = getattr(analysis, "temp_size_in_bytes", 0) if analysis is not None else 0
    return 2 * state_bytes + temp


def models_per_program(
    train_step: Callable,
    init: Callable,
    sample_batch: jax.Array,
    num_models: int,
    strategy: str = "auto",
    *,
    capacity_bytes: int | None = None,
    memory_fraction: float = 0.7,
) -> int:
    """How many models one program can train at once without running out of device memory.

    The vmapped step's memory grows linearly with the number of models: N times `model_bytes` must fit
    in `memory_fraction` of the devices' memory.

    Args:
      train_step: pure single-model step ``(state, batch, beta) -> (state, metrics)``.
      init: ``keys (N, 2) -> stacked states``.
      sample_batch: a batch of the training shape.
      num_models: the models asked for.
      strategy: as for `Population`.
      capacity_bytes: memory of one device; None asks the device (see `device_memory_bytes`).
      memory_fraction: the share of that memory the models may use.

    Returns:
      The chunk size, between 1 and num_models; a smaller value means the sweep runs in chunks.
    """
    if num_models == 1:
        return 1
    per_model = model_bytes(train_step, init, sample_batch, strategy)
    capacity = (capacity_bytes or device_memory_bytes()) * jax.device_count() * memory_fraction
    fit = int(capacity // max(per_model, 1))
    if fit < 1:
        raise MemoryError(
            f"one model needs about {per_model / 2**20:.0f} MiB, more than the {capacity / 2**20:.0f} MiB "
            "available; use a smaller batch_size or network"
        )
    if fit < num_models:
        logging.warning(
            "%d models do not fit in memory at once (about %.0f MiB each): training them in chunks of %d",
            num_models,
            per_model / 2**20,
            fit,
        )
    return min(num_models, fit)


def resolve_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sweep strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy != "auto":
        return strategy
    single_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
    return "sequential" if single_cpu else "vmap"


def to_host(tree: Any) -> Any:
    """Numpy copies of (possibly sharded, possibly multi-process) arrays, on every process."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def _take(tree, index):
    return jax.tree.map(lambda x: x[index], tree)


# Jitted so that splitting and stacking many-leaved states is one compiled program, not one per leaf.
@jax.jit
def _stack(trees: Sequence):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@functools.partial(jax.jit, static_argnums=1)
def _unstack(tree, num_models: int) -> list:
    return [_take(tree, m) for m in range(num_models)]


# Stand-ins, in a dispatch's arguments, for what each model has of its own; a strategy puts them in.
_STATE, _BETA, _PARAMS = object(), object(), object()


def _own(arg) -> bool:
    return arg is _STATE or arg is _BETA or arg is _PARAMS


class _Sequential:
    """Models kept apart, the same jitted single-model function issued for each in turn (one device)."""

    data_sharding = None

    def __init__(self, init: Callable, keys: jax.Array, betas: jax.Array):
        self.num_models = int(betas.shape[0])
        self.states = _unstack(jax.jit(init)(keys), self.num_models)
        self.betas = list(betas)
        self.metrics = [None] * self.num_models

    def vectorize(self, fn: Callable, in_axes: tuple) -> Callable:
        return fn

    def jit(self, fn: Callable, *, updates: bool) -> Callable:
        return jax.jit(fn, donate_argnums=0 if updates else (), compiler_options=cpu_compiler_options())

    def _args(self, args: tuple, m: int) -> list:
        own = {id(_STATE): self.states[m], id(_BETA): self.betas[m], id(_PARAMS): self.states[m].params}
        return [own[id(a)] if _own(a) else a for a in args]

    def update(self, compiled: Callable, args: tuple) -> None:
        for m in range(self.num_models):
            self.states[m], self.metrics[m] = compiled(*self._args(args, m))

    def evaluate(self, compiled: Callable, args: tuple):
        return _stack([compiled(*self._args(args, m)) for m in range(self.num_models)])

    def lower(self, compiled: Callable, args: tuple):
        return compiled.lower(*self._args(args, 0))  # one model's dispatch

    def last_metrics(self):
        return _stack(self.metrics)

    def stacked_states(self):
        return _stack(self.states)

    def load_states(self, stacked) -> None:
        self.states = _unstack(jax.tree.map(jnp.asarray, stacked), self.num_models)


class _Vmapped:
    """Models stacked on a leading axis, one vmapped function for all of them, the axis sharded over a 1-D mesh
    of every device and padded to a multiple of the device count with copies of the last model (whose results
    are dropped)."""

    def __init__(self, init: Callable, keys: jax.Array, betas: jax.Array):
        self.num_models = int(betas.shape[0])
        devices = np.asarray(jax.devices())
        self.mesh = Mesh(devices, ("models",))
        self.models = NamedSharding(self.mesh, PartitionSpec("models"))
        self.data_sharding = NamedSharding(self.mesh, PartitionSpec())
        self._padded = -(-self.num_models // devices.size) * devices.size
        self.betas = jax.device_put(self._pad(betas), self.models)
        self.states = jax.jit(init, out_shardings=self.models)(jax.device_put(self._pad(keys), self.models))
        self.metrics = None

    def vectorize(self, fn: Callable, in_axes: tuple) -> Callable:
        return jax.vmap(fn, in_axes=in_axes)

    def jit(self, fn: Callable, *, updates: bool) -> Callable:
        return jax.jit(
            fn,
            out_shardings=(self.models, self.models) if updates else self.models,
            donate_argnums=0 if updates else (),
            compiler_options=cpu_compiler_options(),
        )

    def _args(self, args: tuple) -> list:
        own = {id(_STATE): self.states, id(_BETA): self.betas, id(_PARAMS): self.states.params}
        return [own[id(a)] if _own(a) else a for a in args]

    def update(self, compiled: Callable, args: tuple) -> None:
        self.states, self.metrics = compiled(*self._args(args))

    def evaluate(self, compiled: Callable, args: tuple):
        return _take(compiled(*self._args(args)), slice(0, self.num_models))

    def lower(self, compiled: Callable, args: tuple):
        return compiled.lower(*self._args(args))

    def last_metrics(self):
        return _take(self.metrics, slice(0, self.num_models))

    def stacked_states(self):
        return _take(self.states, slice(0, self.num_models))

    def load_states(self, stacked) -> None:
        self.states = jax.device_put(jax.tree.map(lambda x: self._pad(jnp.asarray(x)), stacked), self.models)

    def _pad(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate([x, jnp.repeat(x[-1:], self._padded - x.shape[0], axis=0)])


class Population:
    """The training states of N models and the step that advances them all.

    How the models meet the hardware is the strategy's (see the module docstring); every dispatch is the same
    single-model function, vmapped or issued model by model, with beta a traced per-model input.

    Args:
      train_step: pure ``(state, batch, beta) -> (state, metrics)`` for one model.
      init: ``keys (N, 2) -> stacked states``, e.g. a vmapped `create_train_state`.
      keys: (N, 2) one PRNG key per model.
      betas: (N,) one beta per model.
      strategy: ``auto``, ``vmap`` or ``sequential`` (see the module docstring).
    """

    def __init__(self, train_step: Callable, init: Callable, keys: jax.Array, betas: jax.Array, strategy: str = "auto"):
        self.num_models = int(betas.shape[0])
        self.strategy = resolve_strategy(strategy)
        self._models = (_Sequential if self.strategy == "sequential" else _Vmapped)(init, keys, betas)
        self._single_step = train_step
        self._train_step = self._compiled(train_step, (0, None, 0), updates=True)
        self._multi_cache: dict[int, Callable] = {}
        self._eval_cache: dict[Callable, Callable] = {}

    def _compiled(self, fn: Callable, in_axes: tuple, *, updates: bool) -> Callable:
        models = self._models
        return models.jit(models.vectorize(fn, in_axes), updates=updates)

    def _global(self, batch):
        if jax.process_count() > 1:  # every process holds the same batch
            return jax.make_array_from_process_local_data(self._models.data_sharding, np.asarray(batch))
        return batch

    def step(self, batch: jax.Array) -> None:
        """One update of every model on the same batch (asynchronous: nothing waits for the result)."""
        self._models.update(self._train_step, (_STATE, self._global(batch), _BETA))

    def device_data(self, dataset: ArrayDataset, batch_size: int, seed: int) -> device_loop.DeviceData:
        """`dataset` copied to the device(s) for `run_steps`: replicated over the mesh when there is one."""
        return device_loop.device_data(dataset, batch_size, seed, self._models.data_sharding)

    def run_steps(self, data: device_loop.DeviceData, order: jax.Array, epoch: int, start: int, num_steps: int) -> None:
        """`num_steps` updates of every model in one dispatch (one per model when sequential), on batches
        ``start .. start + num_steps - 1`` of `epoch` cut on the device from `data` in the epoch's `order`
        (`device_loop.epoch_order`); the batches must lie inside the epoch. Asynchronous, as `step`."""
        self._models.update(self._multi_step(num_steps), (_STATE, _BETA, data, order, epoch, start))

    def _multi_step(self, num_steps: int) -> Callable:
        if num_steps not in self._multi_cache:
            # The scan runs the vectorized step, so each update cuts one batch for all models.
            step = self._models.vectorize(self._single_step, (0, None, 0))
            self._multi_cache[num_steps] = self._models.jit(device_loop.make_multi_step(step, num_steps), updates=True)
        return self._multi_cache[num_steps]

    def dispatch_bytes(self, batch: jax.Array | None = None, *, device_args: tuple | None = None) -> int:
        """Device memory XLA plans for one dispatch (arguments, outputs and temporaries, less what donation
        aliases): of `step` on `batch`, or of `run_steps` with ``device_args = (data, order, epoch, start,
        num_steps)``; with the sequential strategy, one model's dispatch. Once that dispatch has run, its
        executable is reused (nothing compiles again)."""
        if device_args is None:
            lowered = self._models.lower(self._train_step, (_STATE, self._global(batch), _BETA))
        else:
            data, order, epoch, start, num_steps = device_args
            lowered = self._models.lower(self._multi_step(num_steps), (_STATE, _BETA, data, order, epoch, start))
        analysis = lowered.compile().memory_analysis()
        if analysis is None:
            return 0
        return int(
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            + analysis.temp_size_in_bytes
            - analysis.alias_size_in_bytes
        )

    def block_until_ready(self) -> None:
        """Waits until every model's last step has finished (for timing)."""
        jax.block_until_ready(self._models.states)

    def last_metrics(self) -> dict[str, jax.Array]:
        """The metrics of the last step, with a leading model axis (stacked only when asked for)."""
        return self._models.last_metrics()

    def evaluate(self, eval_step: Callable, batch: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
        """``eval_step(params, batch, key, beta)`` for every model, stacked on the model axis."""
        if eval_step not in self._eval_cache:
            self._eval_cache[eval_step] = self._compiled(eval_step, (0, None, None, 0), updates=False)
        return self._models.evaluate(self._eval_cache[eval_step], (_PARAMS, self._global(batch), key, _BETA))

    def stacked_states(self) -> Any:
        """All models' states stacked on a leading axis of length `num_models`."""
        return self._models.stacked_states()

    def load_states(self, stacked) -> None:
        """Replaces the states (e.g. from a checkpoint) with `stacked`, of the layout of `stacked_states`."""
        self._models.load_states(stacked)
