"""Training: `train_and_evaluate(config, workdir)` trains a config's models and evaluates them.

The data flow: a CLI (``experiments/*.py``) loads a config (``configs/`` on `echo_jax.defaults`) and calls
`train_and_evaluate` with the experiment's evaluators; it builds the model and the pure steps
(`echo_jax.steps`), lays the (beta, seed) models out as populations (`echo_jax.sweep`), and runs each
population through the run loop: a flat loop over steps with periodic actions (log, checkpoint, evaluate).
Each step calls the model (`echo_jax.model`), whose typed output the loss combines.

beta and the learning rate are traced values, so a new beta never recompiles. Batches come from the host
loop (built in numpy, one update per dispatch) or the on-device loop (`echo_jax.device_loop`: the split on
the device, ``steps_per_call`` updates per dispatch), as ``data_loop`` says; the two draw the same kind of
data stream from different generators. The work directory's files are described in `echo_jax.workdir`;
rerunning on the same directory resumes from the latest checkpoint and ends with the same numbers as an
uninterrupted run. A run holds its work directory's lock (`echo_jax.workdir.Lock`) from start to end, and
SIGINT or SIGTERM stops it with a checkpoint where it is (`RunInterrupted`).

A run that diverges stops with `DivergedError` and writes no results: non-finite numbers at once, a finite loss
held far above its own best (`echo_jax.divergence`) after two log periods (two evaluations, or at the end);
no checkpoint is written while a loss is suspect, so the last one kept is good. A full disk is one line
(`echo_jax.errors.DiskFullError`); every file is written atomically, so nothing finished is overwritten.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from echo_jax import (
    checkpoints,
    device_loop,
    diagnostics,
    identity,
    logs,
    pictures,
    report,
    steps,
    sweep,
    trained,
    validation,
)
from echo_jax import data as data_lib
from echo_jax import workdir as workdir_lib
from echo_jax.data import ArrayDataset
from echo_jax.divergence import DivergenceGuard
from echo_jax.errors import ConfigError, DivergedError, Interrupted, UserError, WorkdirError
from echo_jax.files import append_jsonl, disk_full, dumps_strict, is_disk_full, write_atomic
from echo_jax.identity import data_seed_of
from echo_jax.model import Autoencoder

Evaluator = Callable[[Autoencoder, Any, ArrayDataset], dict]
"""A final evaluation of one trained model: ``(model, params, test_set) -> results`` (JSON-able); its results go
into the model's row of results.json under the evaluator's name."""


class RunInterrupted(Interrupted):
    """Raised when a run is asked to stop (``should_stop``, SIGINT or SIGTERM) after saving a checkpoint to resume
    from; `exit_status` is 128 + the signal's number for a signal (130 for SIGINT, 143 for SIGTERM)."""


class _StopSignals:
    """SIGINT and SIGTERM during a run (installed from the main thread only; the previous handlers come back at
    the end). In the run loop and between the parts of the final evaluation, the first signal asks the run to
    stop where it is: it saves a checkpoint there and raises `RunInterrupted`. Elsewhere (loading the data,
    building the models) or at a second signal, the run stops at once, to resume from its last checkpoint."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self.deferred = False  # True while the run can stop at its next step
        self._previous: dict = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        first, self.received = self.received is None, number
        if first and self.deferred:
            return
        raise RunInterrupted(
            f"stopped by {signal.Signals(number).name}; run the same command to resume from the last checkpoint",
            exit_status=128 + number,
        )


def load_datasets(config: ml_collections.ConfigDict) -> tuple[ArrayDataset, ArrayDataset]:
    """Train and test splits as the config asks, checked against the batch size."""
    options = {"binarize": config.binarize} if config.binarize else {}
    if config.get("data_source") == "tfds":
        options["source"] = "tfds"
        data_dir = config.tfds_data_dir or None
    else:
        data_dir = config.data_dir or None
    splits = {}
    for split, limit in (("train", config.num_train_examples), ("test", config.num_test_examples)):
        try:
            dataset = data_lib.load(config.dataset, split, data_dir=data_dir, num_examples=limit or None, **options)
        except ValueError as e:
            if isinstance(e, UserError):
                raise
            raise ConfigError(
                f"dataset {config.dataset!r}, {split} split (config.num_{split}_examples = {limit}, "
                f"config.binarize = {config.binarize!r}): {e}"
            ) from None
        if len(dataset) < config.batch_size:
            raise ConfigError(
                f"batch_size {config.batch_size} is larger than the {split} split of {config.dataset} "
                f"({len(dataset)} examples): batches are full batches only; lower batch_size"
            )
        splits[split] = dataset
    return splits["train"], splits["test"]


def evaluate(
    population: sweep.Population, eval_step: Callable, dataset: ArrayDataset, batch_size: int, key: jax.Array
) -> list[dict]:
    """Mean test terms of every model, over the full batches of `dataset`, with a fixed key."""
    totals, count = None, 0
    bar = logs.progress(data_lib.num_batches(dataset, batch_size), desc="evaluate", unit="batch")
    for i, batch in enumerate(data_lib.eval_batches(dataset, batch_size)):
        sums = population.evaluate(eval_step, jnp.asarray(batch), jax.random.fold_in(key, i))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        count += batch.shape[0]
        bar.update()
    bar.close()
    means = sweep.to_host(jax.tree.map(lambda x: x / count, totals))
    return [{name: float(values[m]) for name, values in means.items()} for m in range(population.num_models)]


@dataclasses.dataclass(frozen=True)
class Program:
    """What every population of a run shares: the model, its compiled pieces and the data."""

    config: ml_collections.ConfigDict
    workdir: str
    model: Autoencoder
    train_step: Callable
    init: Callable
    eval_step: Callable
    final_eval_step: Callable
    train_set: ArrayDataset
    test_set: ArrayDataset
    sample: jax.Array  # a training batch: the shapes the steps compile for
    evaluators: Mapping[str, Evaluator]
    data_loop: str = "host"
    commit: str | None = None  # the code's commit (`identity.code_commit`), recorded with what the run writes
    environment: dict | None = None  # the stack and device it runs on (`identity.environment`), recorded alike

    @property
    def steps_per_epoch(self) -> int:
        return data_lib.num_batches(self.train_set, self.config.batch_size)

    @property
    def total_steps(self) -> int:
        return self.config.num_train_steps or self.steps_per_epoch * self.config.num_epochs


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    evaluators: Mapping[str, Evaluator] | None = None,
    on_step: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Trains every (beta, seed) model of the config on the same data stream and evaluates it.

    Args:
      config: see `echo_jax.defaults.rate_distortion_config`.
      workdir: where the run's files go; an existing run there of the same config is resumed.
      evaluators: final evaluations of each trained model by name (e.g. the disentanglement metrics).
      on_step: called with the step number after every update (progress hooks, tests); with the on-device
        loop (``data_loop``), for each update of a dispatch once the dispatch is issued.
      should_stop: asked before every dispatch (every update with the host loop, every ``steps_per_call``
        updates at most with the on-device loop); when it answers True the run saves a checkpoint at that
        step and raises `RunInterrupted` (rerunning the work directory resumes there).

    Returns:
      The content of results.json.
    """
    validation.validate_config(config)
    with workdir_lib.lock(workdir), _StopSignals() as signals:
        finished = workdir_lib.check(config, workdir)
        if finished is not None:
            logging.info("%s already holds the finished run; returning its results", workdir)
            return finished
        if jax.process_index() == 0:  # only process 0 writes the run's files
            workdir_lib.require_writable(workdir)
        try:
            return _train_and_evaluate(config, workdir, evaluators, on_step, should_stop, signals)
        except OSError as e:
            if is_disk_full(e) and not isinstance(e, UserError):
                raise disk_full(workdir, e) from e
            raise


def _train_and_evaluate(config, workdir: str, evaluators, on_step, should_stop, signals) -> dict:
    """The work of `train_and_evaluate` once the work directory is checked and locked."""
    train_set, test_set = load_datasets(config)
    workdir_lib.prepare(config, workdir)
    runs = sweep.runs_of(config)
    program = _build_program(config, workdir, train_set, test_set, evaluators or {})
    chunk_size, data_loop = _hardware_layout(program, runs)
    program = dataclasses.replace(program, data_loop=data_loop)
    rows, provenance = [], {"commits": [], "environments": []}
    for first in range(0, len(runs), chunk_size):
        chunk = runs[first : first + chunk_size]
        held = identity.checkpoint_identity(chunk, first // chunk_size, chunk_size, len(runs))
        name = "checkpoints" if chunk_size >= len(runs) else f"checkpoints-{first // chunk_size}"
        population_rows, population_provenance = train_population(
            program,
            chunk,
            held,
            os.path.join(workdir, name),
            on_step=on_step,
            should_stop=should_stop,
            signals=signals,
        )
        rows += population_rows
        for kind, held_list in provenance.items():
            held_list += [x for x in population_provenance[kind] if x not in held_list]
    # provenance: every commit and every environment (`identity.environment`) that trained part of the run, in
    # order (None: a part trained before checkpoints recorded it).
    results = {"experiment": config.experiment, "results": rows, "provenance": provenance}
    if jax.process_index() == 0:
        write_atomic(os.path.join(workdir, "results.json"), dumps_strict(results, indent=2))
    return results


def _build_program(config, workdir: str, train_set, test_set, evaluators) -> Program:
    model = steps.make_model(config, train_set.image_shape)
    optimizer = steps.make_optimizer(config, data_lib.num_batches(train_set, config.batch_size))
    sample = jnp.asarray(next(data_lib.eval_batches(train_set, config.batch_size)))
    mean_image = jnp.asarray(train_set.images[: min(len(train_set), 10_000)].mean(axis=0), jnp.float32)
    init = jax.vmap(lambda k: steps.create_train_state(model, optimizer, k, sample, mean_image))
    # The IWAE bound costs iwae_samples forward passes: only the final evaluation computes it.
    eval_step = steps.make_eval_step(model)
    iwae_samples = config.iwae_samples if model.encoder != "echo" else 0
    final_eval_step = steps.make_eval_step(model, iwae_samples=iwae_samples) if iwae_samples else eval_step
    return Program(
        config,
        workdir,
        model,
        steps.make_train_step(model, optimizer),
        init,
        eval_step,
        final_eval_step,
        train_set,
        test_set,
        sample,
        evaluators,
        commit=identity.code_commit(),
        environment=identity.environment(),
    )


def _hardware_layout(program: Program, runs: list) -> tuple[int, str]:
    """`workdir.layout` for this config: the data loop its ``data_loop`` resolves to, and the models that fit
    in a device's memory beside the split when the split lives there."""
    config = program.config
    memory = sweep.device_memory_bytes()
    split_bytes = functools.cache(lambda: device_loop.data_bytes(program.train_set))

    def decide_data_loop() -> str:
        data_loop = config.get("data_loop", "auto")
        return "host" if data_loop == "host" else device_loop.resolve_data_loop(data_loop, split_bytes(), memory)

    def decide_chunk_size(data_loop: str) -> int:
        if config.models_per_program:
            return config.models_per_program
        spare = memory - split_bytes() if data_loop == "device" else None
        return sweep.models_per_program(
            program.train_step, program.init, program.sample, len(runs), config.sweep_strategy, capacity_bytes=spare
        )

    return workdir_lib.layout(program.workdir, runs, decide_chunk_size, decide_data_loop)


# ----------------------------------------------------------------------------------------------- the run loop


@dataclasses.dataclass(frozen=True)
class Periodic:
    """An action of the run loop, due at every multiple of any of `every` (and, unless `at_end`, never at the
    last step, which the final evaluation covers)."""

    every: tuple[int, ...]
    action: Callable[[int], None]
    at_end: bool = True

    def due(self, step: int, total_steps: int) -> bool:
        return any(step % n == 0 for n in self.every) and (self.at_end or step < total_steps)


def _held_then_now(meta: dict, name: str, now: list) -> list:
    """A checkpoint's list of what trained it (commits, environments) followed by this process's, unless the
    population is finished or this one is the last already; None stands for a part trained before checkpoints
    recorded it."""
    held = meta.get(name, [None])
    return held if "test" in meta else held + [x for x in now if x != held[-1]]


def train_population(
    program: Program,
    runs: Sequence[tuple[float, int]],
    identity: dict,
    checkpoint_dir: str,
    *,
    on_step: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    signals: _StopSignals | None = None,
) -> tuple[list[dict], dict]:
    """Trains one population of models to the end (resuming from its checkpoint) and evaluates them.

    Each dispatch runs one update (the host loop) or up to ``steps_per_call`` updates (the on-device loop),
    never across a periodic action; `should_stop` and `signals` are asked between dispatches (never between an
    epoch's last step and its evaluation), `signals` also between the parts of the final evaluation, and
    `on_step` is called for every update once its dispatch is issued.

    Returns:
      The results.json row of every model, and the population's provenance: ``commits`` and ``environments``
      (`identity.environment`) that trained it, in order.
    """
    signals = signals or _StopSignals()
    run = _PopulationRun(program, list(runs), identity, checkpoint_dir)
    step = run.restore()
    if run.rows is not None:  # this population finished before the run was interrupted
        logging.info("%s: finished earlier; its results are read from %s", run.label, checkpoint_dir)
        return run.rows, run.provenance()
    signals.deferred = True
    try:
        return _run_loop(run, step, signals, on_step, should_stop), run.provenance()
    finally:
        signals.deferred = False


def _run_loop(run: _PopulationRun, step: int, signals: _StopSignals, on_step, should_stop) -> list[dict]:
    program = run.program
    config, total_steps = program.config, program.total_steps
    epoch = program.steps_per_epoch
    actions = (
        Periodic((config.log_every_steps, epoch), run.log_train),
        # Evaluate before checkpointing: a suspect evaluation then keeps its step from being checkpointed.
        Periodic((epoch * config.eval_every_epochs,), run.evaluate, at_end=False),
        Periodic((config.checkpoint_every_steps or epoch,), run.save, at_end=False),
    )
    run.announce(step)
    advance = _make_advance(config, run.population, program.train_set, program.data_loop, step)
    # Compilation is never timed: a dispatch of a size not run before compiles (the host loop's first one, the
    # on-device loop's first of each number of updates), so the run waits for it and the clocks start after it.
    # The progress bar is made after the first one, so that its ETA counts no compilation either.
    bar, compiled, started, estimated = None, set(), time.perf_counter(), False
    while step < total_steps:
        if signals.received or (should_stop is not None and should_stop()):
            if bar is not None:
                bar.close()
            run.interrupt(step, signals.received)
        done = advance(step, device_loop.steps_to_boundary(step, sum((a.every for a in actions), ()), total_steps))
        for update in range(step + 1, step + done + 1):
            if on_step is not None:
                on_step(update)
        step += done
        fresh = done not in compiled
        compiled.add(done)
        if fresh or not estimated:
            run.population.block_until_ready()
        if bar is None:
            run.compile_seconds = time.perf_counter() - started
            bar = logs.progress(total_steps, initial=step, desc=run.label)
        else:
            bar.update(done)
        if not fresh and not estimated:  # the first dispatch timed since the last compilation
            run.log_expected_time(step)
            estimated = True
        ran = False
        for periodic in actions:
            if periodic.due(step, total_steps):
                periodic.action(step)
                ran = True
        if fresh or ran:  # every action waits for the models: the next period is timed from here
            run.clock = (time.perf_counter(), step)
    if bar is not None:
        bar.close()
    stop = lambda: signals.received  # noqa: E731 - asked between the parts of the final evaluation
    if stop():
        run.interrupt(step, stop())
    return run.finish(step, stop)


class _PopulationRun:
    """One population's models, checkpoints and logs: the state the run loop's actions share."""

    def __init__(self, program: Program, runs: list, identity: dict, checkpoint_dir: str):
        config = program.config
        keys = jnp.stack([jax.random.PRNGKey(seed) for _, seed in runs])
        betas = jnp.asarray([beta for beta, _ in runs], jnp.float32)
        self.population = sweep.Population(
            program.train_step, program.init, keys, betas, strategy=config.sweep_strategy
        )
        self.program, self.runs, self.identity = program, runs, identity
        # How log lines and the progress bar name the models: their method, beta and seed.
        self.method = report.method_name({"encoder": program.model.encoder, "marginal": program.model.marginal})
        self.label = logs.models_label(self.method, runs)
        self.clock: tuple[float, int] | None = None  # (time, step) the speed of the current log period counts from
        self.compile_seconds = 0.0  # the first dispatch's time, compilation included
        # get: a config written before the field existed keeps the field's default.
        self.checkpoints = checkpoints.Checkpointer(checkpoint_dir, max_to_keep=config.get("checkpoints_to_keep", 1))
        self.commits = [program.commit]  # the commits that trained these models, in order
        self.environments = [program.environment]  # and the environments, alike
        self.metrics_path = os.path.join(program.workdir, "metrics.jsonl")
        self.eval_key = jax.random.PRNGKey(data_seed_of(config) + 12)  # the same evaluation noise every time
        self.tensorboard = None
        self.rows = None  # set when the population is finished
        self.start = time.perf_counter()
        self.last_good = 0
        # Finite losses far above their own best (a learning rate too large): see `echo_jax.divergence`.
        self.guards = {split: DivergenceGuard(len(runs)) for split in ("train", "test")}

    # ----------------------------------------------------------------------------------- resume and save

    def restore(self) -> int:
        """Loads the latest checkpoint, if any, trims the metrics logged after it and returns its step."""
        template = sweep.to_host(self.population.stacked_states())
        legacy = os.path.join(self.program.workdir, _legacy_name(self.checkpoints.directory))
        if self.checkpoints.latest_step() is None and os.path.exists(legacy):  # a work directory of echo-jax 0.1
            checkpoints.convert_msgpack_checkpoint(legacy, self.checkpoints, template)
        states, meta = None, {"step": 0, "seconds": 0.0}
        if self.checkpoints.latest_step() is not None:
            # A finished population's checkpoint holds its results and no states (`save`): read the meta first.
            meta = self.checkpoints.meta()
            self._check_identity(meta, self.checkpoints.directory)
            if "test" not in meta:
                states, meta = self.checkpoints.restore(template)
            self.commits = _held_then_now(meta, "commits", self.commits)
            self.environments = _held_then_now(meta, "environments", self.environments)
        if "test" in meta:
            self.rows = self._rows(meta["test"], meta["extra"], meta["seconds"])
            return meta["step"]
        if states is not None:
            self.population.load_states(states)
            logging.info(
                "resumed %s at step %d of %d", self.checkpoints.directory, meta["step"], self.program.total_steps
            )
        step = self.last_good = int(meta["step"])
        for split, guard in self.guards.items():
            guard.load(meta.get("divergence", {}).get(split))
        self.start = time.perf_counter() - float(meta["seconds"])
        if jax.process_index() == 0:
            workdir_lib.trim_metrics(self.metrics_path, self.runs, step)
        if self.program.config.get("tensorboard"):
            self.tensorboard = logs.TensorBoard(self.program.workdir, self.runs, resume_step=step or None)
        return step

    def provenance(self) -> dict:
        """The commits and environments that trained this population, in order."""
        return {"commits": self.commits, "environments": self.environments}

    def _check_identity(self, meta: dict, path: str) -> None:
        if "identity" not in meta and self.identity["chunk_size"] >= self.identity["num_models"]:
            return  # written before checkpoints named their models: a whole-sweep checkpoint of this config
        held = meta.get("identity")
        if held != self.identity:
            raise WorkdirError(
                f"checkpoint {path} holds other models than this run's (it holds {held and held['runs']}, this run "
                f"trains {self.identity['runs']} in programs of {self.identity['chunk_size']}); use a new --workdir"
            )

    def save(self, step: int, test: list | None = None, extra: list | None = None) -> bool:
        """Checkpoints the population unless a model's loss is suspect (then the last good checkpoint stays the
        latest, and this answers False); raises `DivergedError` instead if a parameter is non-finite, keeping the
        last good checkpoint.

        A finished population (`test` given) saves its results and no states: a resumed run needs only to know
        that it is finished, and the trained parameters are in each model's parameters file (`finish`)."""
        states = sweep.to_host(self.population.stacked_states())
        if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(states.params)):
            raise self._diverged(f"the parameters became non-finite by step {step}")
        suspect = self._suspect(step)
        if suspect:
            logging.warning(
                "step %d: no checkpoint while the loss of (beta, seed) %s is far above its best", step, suspect
            )
            return False
        meta = {
            "step": step,
            "seconds": time.perf_counter() - self.start,
            "identity": self.identity,
            "commits": self.commits,
            "environments": self.environments,
            "divergence": {split: guard.state() for split, guard in self.guards.items()},
        }
        if test is not None:
            meta["test"], meta["extra"] = test, extra
        # A run stopped in its final evaluation saved this step without results: the finished one replaces it.
        self.checkpoints.save(step, None if test is not None else states, meta, replace=test is not None)
        self.last_good = step
        return True

    def interrupt(self, step: int, signal_number: int | None = None) -> None:
        """Saves a checkpoint at `step` (unless there is one) and raises `RunInterrupted`, which says where the run
        stopped and how to resume; a signal's exit status is 128 + its number."""
        saved = step > 0 and (self.last_good == step or self.save(step))
        self._close()
        total = self.program.total_steps
        where = f"stopped at step {step} of {total}" + (" (in the final evaluation)" if step == total else "")
        if saved:
            saved = "checkpoint saved; run the same command to resume"
        elif self.last_good > 0:  # a suspect loss: `save` kept the last good checkpoint
            saved = f"no checkpoint of this step (its loss is suspect); the same command resumes at {self.last_good}"
        else:
            saved = "nothing to save yet"
        raise RunInterrupted(f"{where}; {saved}", exit_status=128 + signal_number if signal_number else 1)

    # ----------------------------------------------------------------------------------- periodic actions

    def log_train(self, step: int) -> None:
        """Logs the last update's training terms, one line per model; raises `DivergedError` if any model's are
        non-finite."""
        self.population.block_until_ready()  # timed before the metrics reach the host, which costs time of its own
        speed = self.steps_per_second(step)
        host = sweep.to_host(self.population.last_metrics())
        finite = np.all([np.isfinite(v) for v in host.values()], axis=0)
        if not np.all(finite):
            bad = [self.runs[m] for m in np.flatnonzero(~finite)]
            raise self._diverged(f"training became non-finite at step {step} for (beta, seed) {bad}")
        self._record("train", step, jax.tree.map(lambda x: np.asarray(x).tolist(), host))
        self._watch("train", step, host["loss"])
        if self.tensorboard is not None:
            self.tensorboard.write(step, "train", host)
        for line in logs.train_lines(step, self.program.total_steps, self.method, self.runs, host, speed):
            logging.info("%s", line)

    def steps_per_second(self, step: int) -> float | None:
        """Updates a second from `clock` to `step`, once the models' work up to `step` is done
        (`Population.block_until_ready`); None before any update is timed."""
        if self.clock is None or step <= self.clock[1]:
            return None
        return (step - self.clock[1]) / max(time.perf_counter() - self.clock[0], 1e-9)

    def announce(self, step: int) -> None:
        """Logs what the population trains, on which devices, for how many steps, and where its results go."""
        program, held = self.program, self.identity
        programs = -(-held["num_models"] // held["chunk_size"])
        part = f" (program {held['chunk'] + 1} of {programs})" if programs > 1 else ""
        total, epoch = program.total_steps, program.steps_per_epoch
        logging.info("training %s%s", logs.describe_models(self.method, self.runs), part)
        logging.info(
            "  on %s (sweep_strategy %s, data_loop %s)",
            logs.devices_in_words(jax.devices()),
            self.population.strategy,
            program.data_loop,
        )
        logging.info(
            "  %d steps (%.3g epochs of %d steps)%s",
            total,
            total / epoch,
            epoch,
            f", resuming at step {step}" if step else "",
        )
        logging.info(
            "  results in %s (metrics.jsonl as it trains; models/ and results.json at the end)", program.workdir
        )
        if step < total:  # else only the final evaluation is left (a run stopped in it)
            logging.info("  compiling the training step; the expected time follows once a compiled step is timed")

    def log_expected_time(self, step: int) -> None:
        """Logs the training time left at the speed of the first dispatch timed after compilation."""
        speed = self.steps_per_second(step)
        if not speed:
            return
        left = self.program.total_steps - step
        logging.info(
            "%s: compiled and ran its first dispatch in %s; %.1f steps/s, expected training time %s for the %d "
            "steps left (evaluations and checkpoints come on top)",
            self.label,
            logs.duration(self.compile_seconds),
            speed,
            logs.duration(left / speed),
            left,
        )

    def evaluate(self, step: int) -> list[dict]:
        """Evaluates every model on the test split and logs the terms; raises `DivergedError` if non-finite."""
        test = self._test_terms(step, self.program.eval_step)
        self._log_test(step, test)
        self._watch("test", step, [row["loss"] for row in test])
        return test

    def _test_terms(self, step: int, eval_step: Callable) -> list[dict]:
        program = self.program
        test = evaluate(self.population, eval_step, program.test_set, program.config.batch_size, self.eval_key)
        bad = [self.runs[m] for m, row in enumerate(test) if not all(np.isfinite(v) for v in row.values())]
        if bad:
            raise self._diverged(f"the test evaluation at step {step} is non-finite for (beta, seed) {bad}")
        return test

    def _log_test(self, step: int, test: list[dict], *, final: bool = False) -> None:
        self._record("test", step, {"test": test})
        if self.tensorboard is not None:
            self.tensorboard.write(step, "test", {name: [row[name] for row in test] for name in test[0]})
        total = self.program.total_steps
        for line in logs.evaluation_lines(step, total, self.method, self.runs, test, final=final):
            logging.info("%s", line)

    def finish(self, step: int, stop: Callable[[], int | None] = lambda: None) -> list[dict]:
        """The final evaluation (the IWAE bound where defined, the training split's terms, the diagnostics, then
        the experiment's evaluators) and each model's parameters file and pictures, saved with the last
        checkpoint so that a finished population is never evaluated twice.

        `stop` is asked between the parts (it answers a signal's number to stop): the run then stops with a
        checkpoint at `step` and logs nothing of the evaluation, which the resumed run does again."""
        program = self.program
        test = self._test_terms(step, program.final_eval_step)
        # A final model whose loss is suspect is never reported (there is no later period to clear it).
        self.guards["test"].suspect |= self.guards["test"].above([row["loss"] for row in test])
        suspect = self._suspect(step)
        if suspect:
            train, held = self.guards["train"], self.guards["test"]
            raise self._diverged(
                f"the run ended at step {step} with a loss above {train.factor:g}x its best for (beta, seed) "
                f"{suspect}: training loss {_fmt(train.last)} (best {_fmt(train.best)}), test loss "
                f"{_fmt([row['loss'] for row in test])} (best {_fmt(held.best)})"
            )
        if stop():
            self.interrupt(step, stop())
        train_terms = evaluate(
            self.population, program.eval_step, program.train_set, program.config.batch_size, self.eval_key
        )
        bad = [self.runs[m] for m, row in enumerate(train_terms) if not all(np.isfinite(v) for v in row.values())]
        if bad:
            raise self._diverged(f"the training-split evaluation at step {step} is non-finite for (beta, seed) {bad}")
        params = self.population.stacked_states().params
        extra = []
        for m in range(len(self.runs)):
            model_params = jax.tree.map(lambda x, m=m: x[m], params)
            row = {
                "train": train_terms[m],
                "diagnostics": diagnostics.run_diagnostics(
                    program.model,
                    model_params,
                    program.train_set,
                    program.test_set,
                    program.config.batch_size,
                    jax.random.fold_in(self.eval_key, 1),
                    test_rate=test[m]["rate"],
                    # A fit no longer than the training: a smoke-test run gets a cheap (looser, still valid) bound.
                    fit_steps=min(diagnostics.FLOW_FIT_STEPS, program.total_steps),
                ),
            }
            for name, evaluator in program.evaluators.items():
                row[name] = evaluator(program.model, model_params, program.test_set)
            extra.append(row)
            if stop():
                self.interrupt(step, stop())
        self._log_test(step, test, final=True)
        seconds = time.perf_counter() - self.start
        host_params = sweep.to_host(params)  # every process: gathering sharded arrays is collective
        if jax.process_index() == 0:
            for m in range(len(self.runs)):
                self._write_model(m, jax.tree.map(lambda x, m=m: x[m], host_params), test[m], train_terms[m])
        self.save(step, test=test, extra=extra)
        self._close()
        return self._rows(test, extra, seconds)

    def _write_model(self, m: int, params, test: dict, train_terms: dict) -> None:
        """models/beta<b>_seed<s>/: the parameters file, its sidecar and the pictures of model `m`."""
        config = self.program.config
        beta, seed = self.runs[m]
        base = config.copy_and_resolve_references()
        base.data_seed = data_seed_of(config)  # the sweep's shared stream
        single = identity.single_run_config(base, beta, seed)
        directory = os.path.join(self.program.workdir, trained.MODELS_DIR, trained.model_dir_name(beta, seed))
        trained.save_model(
            directory,
            jax.device_get(params),  # host arrays (gathered by `finish` on every process)
            config=single,
            image_shape=self.program.train_set.image_shape,
            reference_images=np.asarray(self.program.sample),
            info={
                "key": identity.run_key(single),
                "commit": self.program.commit,
                "test": test,
                "train": train_terms,
            },
        )
        images = next(data_lib.eval_batches(self.program.test_set, min(2000, len(self.program.test_set))))
        pictures.write_pictures(trained.load_run(directory), np.asarray(images), directory, jax.random.PRNGKey(0))

    # ----------------------------------------------------------------------------------- helpers

    def _rows(self, test: list, extra: list, seconds: float) -> list[dict]:
        config, model = self.program.config, self.program.model
        return [
            {
                "beta": beta,
                "seed": seed,
                "dataset": config.dataset,
                "network": model.network,
                "encoder": model.encoder,
                "marginal": model.marginal,
                "test": test[m],
                "steps": self.program.total_steps,
                "seconds": seconds,
                "data_loop": self.program.data_loop,
                **extra[m],
            }
            for m, (beta, seed) in enumerate(self.runs)
        ]

    def _record(self, split: str, step: int, values: dict) -> None:
        if jax.process_index() == 0:
            append_jsonl(
                self.metrics_path,
                {
                    "split": split,
                    "step": step,
                    "epoch": step / self.program.steps_per_epoch,
                    "beta": [b for b, _ in self.runs],
                    "seed": [s for _, s in self.runs],
                    **values,
                },
            )

    def _watch(self, split: str, step: int, losses) -> None:
        """Raises `DivergedError` for the models whose `split` loss stayed far above its best (`DivergenceGuard`)."""
        guard = self.guards[split]
        best = guard.best.copy()
        diverged = guard.update(losses)
        if diverged:
            figures = "; ".join(f"{self.runs[m]}: {losses[m]:.4g} against a best of {best[m]:.4g}" for m in diverged)
            raise self._diverged(
                f"the {'training' if split == 'train' else 'test'} loss diverged by step {step}, above "
                f"{guard.factor:g}x its best at two {'log periods' if split == 'train' else 'evaluations'} in a row, "
                f"for (beta, seed) {figures}"
            )

    def _suspect(self, step: int) -> list:
        """The (beta, seed) models whose loss is suspect at `step`: at the last log period or evaluation, or at the
        last update (between log periods; at the last good checkpoint's step, none was made since)."""
        now = self.guards["train"].suspect | self.guards["test"].suspect
        if step != self.last_good:
            now = now | self.guards["train"].above(sweep.to_host(self.population.last_metrics())["loss"])
        return [self.runs[m] for m in np.flatnonzero(now)]

    def _diverged(self, what: str) -> DivergedError:
        """The error of a diverged run: what happened, which checkpoint exists, and what to do."""
        self._close()
        if self.last_good > 0:
            kept = f"the last good checkpoint (step {self.last_good}) is kept in {self.checkpoints.directory}"
        else:
            kept = "no checkpoint was written before that"
        return DivergedError(
            f"{what}; {kept}. Lower learning_rate (or check the data) and train in a new --workdir: "
            f"{self.program.workdir} is locked to this config (delete it to start over)"
        )

    def _close(self) -> None:
        self.checkpoints.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _legacy_name(checkpoint_dir: str) -> str:
    """echo-jax 0.1's msgpack file of the same population: checkpoint.msgpack or checkpoint-<chunk>.msgpack."""
    return os.path.basename(checkpoint_dir).replace("checkpoints", "checkpoint") + ".msgpack"


def _make_advance(config, population, train_set, data_loop: str, step: int) -> Callable[[int, int], int]:
    """``advance(step, limit)``: issues the updates that follow `step` (one, or up to ``steps_per_call``
    but at most `limit`, with the on-device loop) and returns how many.

    Both loops serve the data stream of `data_seed_of(config)`, each from its own generator (see
    `echo_jax.device_loop`): the host loop's batches are `echo_jax.data.batches`, built in numpy.
    """
    seed = data_seed_of(config)
    if data_loop == "host":
        stream = _host_batches(train_set, config.batch_size, seed, step)

        def advance_host(step: int, limit: int) -> int:
            population.step(jnp.asarray(next(stream)))
            return 1

        return advance_host
    data = population.device_data(train_set, config.batch_size, seed)
    steps_per_call = config.get("steps_per_call", device_loop.DEFAULT_STEPS_PER_CALL)
    orders: dict[int, jax.Array] = {}

    def advance_device(step: int, limit: int) -> int:
        epoch, in_epoch = divmod(step, data.steps_per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = device_loop.epoch_order(data, epoch)
        count = min(steps_per_call, limit)
        population.run_steps(data, orders[epoch], epoch, in_epoch, count)
        return count

    return advance_device


def _host_batches(train_set, batch_size: int, seed: int, step: int):
    """The host loop's batches from `step` on, epoch after epoch."""
    epoch, in_epoch = divmod(step, data_lib.num_batches(train_set, batch_size))
    while True:
        yield from data_lib.batches(train_set, batch_size, seed=seed, epoch=epoch, start_step=in_epoch)
        epoch, in_epoch = epoch + 1, 0


def _fmt(values) -> str:
    values = np.atleast_1d(values)
    return ",".join(f"{v:.2f}" for v in values[:8]) + ("..." if values.size > 8 else "")
