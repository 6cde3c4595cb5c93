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
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from echo_jax import defaults, device_loop
from echo_jax.data.datasets import ArrayDataset
from echo_jax.networks import cpu_compiler_options

STRATEGIES = defaults.CHOICES["sweep_strategy"]


def betas_of(config: ml_collections.ConfigDict) -> list[float]:
    """The betas a config asks for: ``betas`` ("0.1,0.3,1" or a sequence) if set, else ``[beta]``."""
    betas = config.get("betas", "")
    if isinstance(betas, str):
        try:
            values = [float(b) for b in betas.replace(" ", "").split(",") if b]
        except ValueError:
            raise ValueError(f"betas must be a comma-separated list of numbers, got {betas!r}") from None
    elif isinstance(betas, (int, float)):
        values = [float(betas)]
    else:
        values = [float(b) for b in betas]
    return values or [float(config.beta)]


def runs_of(config: ml_collections.ConfigDict) -> list[tuple[float, int]]:
    """(beta, seed) for every model of the run: each beta with seeds seed, seed + 1, ..."""
    seeds = range(config.seed, config.seed + config.get("num_seeds", 1))
    return [(beta, seed) for beta in betas_of(config) for seed in seeds]


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


class Population:
    """The stacked training states of N models and the step that advances them all.

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
        self._eval_cache: dict[Callable, Callable] = {}
        self._single_step = train_step
        self._multi_cache: dict[int, Callable] = {}
        if self.strategy == "sequential":
            self._train_step = jax.jit(train_step, donate_argnums=0, compiler_options=cpu_compiler_options())
            self._betas = list(betas)
            self._states = _unstack(jax.jit(init)(keys), self.num_models)
            self._metrics = [None] * self.num_models
            return
        devices = np.asarray(jax.devices())
        self.mesh = Mesh(devices, ("models",))
        self._models = NamedSharding(self.mesh, PartitionSpec("models"))
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        # Pad the model axis to a multiple of the device count with copies of the last model; their
        # results are dropped.
        self._padded = -(-self.num_models // devices.size) * devices.size
        self._betas = jax.device_put(self._pad(betas), self._models)
        self._states = jax.jit(init, out_shardings=self._models)(jax.device_put(self._pad(keys), self._models))
        self._metrics = None
        self._train_step = jax.jit(
            jax.vmap(train_step, in_axes=(0, None, 0)),
            in_shardings=(self._models, self._replicated, self._models),
            out_shardings=(self._models, self._models),
            donate_argnums=0,
            compiler_options=cpu_compiler_options(),
        )

    def _global(self, batch):
        if jax.process_count() > 1:  # every process holds the same batch
            return jax.make_array_from_process_local_data(self._replicated, np.asarray(batch))
        return batch

    def step(self, batch: jax.Array) -> None:
        """One update of every model on the same batch (asynchronous: nothing waits for the result)."""
        if self.strategy == "sequential":
            for m in range(self.num_models):
                self._states[m], self._metrics[m] = self._train_step(self._states[m], batch, self._betas[m])
        else:
            self._states, self._metrics = self._train_step(self._states, self._global(batch), self._betas)

    def device_data(self, dataset: ArrayDataset, batch_size: int, seed: int) -> device_loop.DeviceData:
        """`dataset` copied to the device(s) for `run_steps`: replicated over the mesh when there is one."""
        sharding = None if self.strategy == "sequential" else self._replicated
        return device_loop.device_data(dataset, batch_size, seed, sharding)

    def run_steps(self, data: device_loop.DeviceData, order: jax.Array, epoch: int, start: int, num_steps: int) -> None:
        """`num_steps` updates of every model in one dispatch (one per model when sequential), on batches
        ``start .. start + num_steps - 1`` of `epoch` cut on the device from `data` in the epoch's `order`
        (`device_loop.epoch_order`); the batches must lie inside the epoch. Asynchronous, as `step`."""
        multi = self._multi_step(num_steps)
        if self.strategy == "sequential":
            for m in range(self.num_models):
                self._states[m], self._metrics[m] = multi(self._states[m], self._betas[m], data, order, epoch, start)
        else:
            self._states, self._metrics = multi(self._states, self._betas, data, order, epoch, start)

    def _multi_step(self, num_steps: int) -> Callable:
        if num_steps not in self._multi_cache:
            if self.strategy == "sequential":
                multi = device_loop.make_multi_step(self._single_step, num_steps)
                jitted = jax.jit(multi, donate_argnums=0, compiler_options=cpu_compiler_options())
            else:
                step = jax.vmap(self._single_step, in_axes=(0, None, 0))
                multi = device_loop.make_multi_step(step, num_steps)
                jitted = jax.jit(
                    multi,
                    out_shardings=(self._models, self._models),
                    donate_argnums=0,
                    compiler_options=cpu_compiler_options(),
                )
            self._multi_cache[num_steps] = jitted
        return self._multi_cache[num_steps]

    def dispatch_bytes(self, batch: jax.Array | None = None, *, device_args: tuple | None = None) -> int:
        """Device memory XLA plans for one dispatch (arguments, outputs and temporaries, less what donation
        aliases): of `step` on `batch`, or of `run_steps` with ``device_args = (data, order, epoch, start,
        num_steps)``; with the sequential strategy, one model's dispatch. Once that dispatch has run, its
        executable is reused (nothing compiles again)."""
        sequential = self.strategy == "sequential"
        states, betas = (self._states[0], self._betas[0]) if sequential else (self._states, self._betas)
        if device_args is None:
            lowered = self._train_step.lower(states, batch if sequential else self._global(batch), betas)
        else:
            data, order, epoch, start, num_steps = device_args
            lowered = self._multi_step(num_steps).lower(states, betas, data, order, epoch, start)
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
        jax.block_until_ready(self._states)

    def last_metrics(self) -> dict[str, jax.Array]:
        """The metrics of the last step, with a leading model axis (stacked only when asked for)."""
        if self.strategy == "sequential":
            return _stack(self._metrics)
        return _take(self._metrics, slice(0, self.num_models))

    def evaluate(self, eval_step: Callable, batch: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
        """``eval_step(params, batch, key, beta)`` for every model, stacked on the model axis."""
        jitted = self._jitted_eval(eval_step)
        if self.strategy == "sequential":
            return _stack([jitted(s.params, batch, key, b) for s, b in zip(self._states, self._betas)])
        return _take(jitted(self._states.params, self._global(batch), key, self._betas), slice(0, self.num_models))

    def _jitted_eval(self, eval_step: Callable):
        cache = self._eval_cache
        if eval_step not in cache:
            if self.strategy == "sequential":
                cache[eval_step] = jax.jit(eval_step, compiler_options=cpu_compiler_options())
            else:
                cache[eval_step] = jax.jit(
                    jax.vmap(eval_step, in_axes=(0, None, None, 0)),
                    out_shardings=self._models,
                    compiler_options=cpu_compiler_options(),
                )
        return cache[eval_step]

    def stacked_states(self) -> Any:
        """All models' states stacked on a leading axis of length `num_models`."""
        if self.strategy == "sequential":
            return _stack(self._states)
        return _take(self._states, slice(0, self.num_models))

    def load_states(self, stacked) -> None:
        """Replaces the states (e.g. from a checkpoint) with `stacked`, of the layout of `stacked_states`."""
        if self.strategy == "sequential":
            self._states = _unstack(jax.tree.map(jnp.asarray, stacked), self.num_models)
            return
        self._states = jax.device_put(jax.tree.map(lambda x: self._pad(jnp.asarray(x)), stacked), self._models)

    def _pad(self, x: jax.Array) -> jax.Array:
        """`x` with its model axis padded to the device multiple by copies of its last entry."""
        return jnp.concatenate([x, jnp.repeat(x[-1:], self._padded - x.shape[0], axis=0)])
