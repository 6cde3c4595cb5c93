"""Training: the train state, one pure train step, evaluation, and `train_and_evaluate(config, workdir)`.

A run trains one model per (beta, seed) pair (one pair unless the config asks for a sweep), all on the same
data stream; `echo_jax.sweep` decides how the models share the devices. beta and the learning rate are
traced values, so a new beta never recompiles. Batches come from the host loop (built in numpy, one update per
dispatch) or the on-device loop (`echo_jax.device_loop`: the split on the device, ``steps_per_call`` updates
per dispatch), as ``data_loop`` says; the two draw the same kind of data stream from different generators.

A work directory holds ``config.json`` (the resolved config), ``metrics.jsonl`` (training and evaluation
logs), ``checkpoint.msgpack`` (the latest finite state, written atomically), ``layout.json`` (models per program
and data loop, decided once) and, at the end,
``results.json``. Rerunning on the same directory resumes from the checkpoint and ends with the same
numbers as an uninterrupted run.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import serialization

from echo_jax import data as data_lib
from echo_jax import defaults, device_loop
from echo_jax import disentanglement
from echo_jax import model as model_lib
from echo_jax import sweep, validation
from echo_jax.errors import ConfigError, DivergedError, UserError, WorkdirError
from echo_jax.files import append_jsonl, dumps_strict, write_atomic



class RunInterrupted(Exception):
    """Raised when a run is asked to stop (``should_stop``) after saving a checkpoint to resume from."""


@flax.struct.dataclass
class TrainState:
    """Everything a model's training needs; a pytree, so states stack on a leading (beta) axis.

    Attributes:
      step: number of updates done.
      params: the model's parameters.
      opt_state: the optimizer's state.
      key: the model's base PRNG key; step t uses fold_in(key, t).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array


# ----------------------------------------------------------------------------------------------- config


def load_datasets(config: ml_collections.ConfigDict):
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
            raise ConfigError(f"dataset {config.dataset!r}, {split} split (config.num_{split}_examples = {limit}, "
                              f"config.binarize = {config.binarize!r}): {e}") from None
        if len(dataset) < config.batch_size:
            raise ConfigError(
                f"batch_size {config.batch_size} is larger than the {split} split of {config.dataset} "
                f"({len(dataset)} examples): batches are full batches only; lower batch_size"
            )
        splits[split] = dataset
    return splits["train"], splits["test"]


def make_model(config: ml_collections.ConfigDict, image_shape) -> model_lib.Autoencoder:
    return model_lib.Autoencoder(
        image_shape=tuple(image_shape),
        network=config.network,
        encoder=config.encoder,
        marginal=config.marginal,
        latent_dim=config.latent_dim,
        mlp_hidden=tuple(config.mlp_hidden),
        echo_activation=config.echo_activation,
        echo_fx_bound=config.echo_fx_bound,
        echo_clip=config.echo_clip or None,
        echo_order=config.echo_order,
        flow_steps=config.flow_steps,
        flow_hidden=tuple(config.flow_hidden),
        flow_affine=config.flow_affine,
        vamp_components=config.vamp_components,
        vamp_as_coded=config.vamp_as_coded,
        mmd_bandwidth=config.mmd_bandwidth or None,
        with_mmd=config.mmd_weight > 0,
        with_discriminator=config.tc_weight > 0,
    )


# ----------------------------------------------------------------------------------------------- optimisation


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """The per-epoch learning rate, as a function of the (traced) update count.

    linear_decay: constant until epoch N/2, then linearly to 0 at epoch N ("Fixing a Broken ELBO").
    as_coded: the original alemi_lr_sched, lr * (1 - (N - epoch) / (N/2)) after N/2: it drops to
    lr / 100 at epoch N/2 + 1 and climbs back to lr.
    """
    base, total = config.learning_rate, config.num_epochs
    half = total / 2

    def schedule(count):
        epoch = count // steps_per_epoch
        if config.lr_schedule == "constant":
            return jnp.full((), base, jnp.float32)
        if config.lr_schedule == "linear_decay":
            late = base * (total - epoch) / (total - half)
        else:
            late = base * (1.0 - (total - epoch) / half)
        return jnp.where(epoch <= half, base, late).astype(jnp.float32)

    return schedule


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam (b1 0.9, b2 0.999, eps from the config: Keras's 1e-7 in the original); the TC discriminator,
    when there is one, has its own Adam (lr discriminator_learning_rate, b1 0.5), as in FactorVAE."""
    adam = optax.adam(learning_rate_schedule(config, steps_per_epoch), b1=0.9, b2=0.999, eps=config.adam_eps)
    if config.tc_weight <= 0:
        return adam
    discriminator_adam = optax.adam(config.discriminator_learning_rate, b1=0.5, b2=0.999, eps=config.adam_eps)
    labels = lambda params: {k: "discriminator" if k == "discriminator" else "model" for k in params}
    return optax.multi_transform({"model": adam, "discriminator": discriminator_adam}, labels)


def create_train_state(model, optimizer, key: jax.Array, sample_batch: jax.Array, mean_image: jax.Array):
    """A fresh TrainState for one model (vmap it over keys for several)."""
    init_key, noise_key, run_key = jax.random.split(key, 3)
    params = model.init({"params": init_key, "noise": noise_key}, sample_batch)["params"]
    params = model_lib.init_vamp_pseudo_inputs(params, mean_image)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), key=run_key)


def make_train_step(model, optimizer, *, mmd_weight: float = 0.0, tc_weight: float = 0.0) -> Callable:
    """Pure train step ``(state, batch, beta) -> (state, metrics)``; jit or vmap it as needed.

    With a total-correlation discriminator, one forward pass serves two gradients: the model's loss for
    everything but the discriminator, and the discriminator's own loss for the discriminator.
    """

    def train_step(state: TrainState, batch: jax.Array, beta: jax.Array):
        noise_key = jax.random.fold_in(state.key, state.step)

        def losses(params):
            terms = model.apply({"params": params}, batch, rngs={"noise": noise_key})
            loss, metrics = model_lib.loss_from_terms(terms, beta, mmd_weight=mmd_weight, tc_weight=tc_weight)
            return (loss, terms.get("discriminator_loss", jnp.zeros(()))), metrics

        (loss, discriminator_loss), backward, metrics = jax.vjp(losses, state.params, has_aux=True)
        (grads,) = backward((jnp.ones_like(loss), jnp.zeros_like(discriminator_loss)))
        if model.with_discriminator:
            (discriminator_grads,) = backward((jnp.zeros_like(loss), jnp.ones_like(discriminator_loss)))
            grads = {**grads, "discriminator": discriminator_grads["discriminator"]}
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_eval_step(model, *, mmd_weight: float = 0.0, tc_weight: float = 0.0, iwae_samples: int = 0) -> Callable:
    """Pure evaluation on one batch ``(params, batch, key, beta) -> summed terms`` (sums, not means)."""

    def eval_step(params, batch, key, beta):
        terms = model.apply({"params": params}, batch, rngs={"noise": key})
        _, means = model_lib.loss_from_terms(terms, beta, mmd_weight=mmd_weight, tc_weight=tc_weight)
        sums = {name: value * batch.shape[0] for name, value in means.items()}
        if iwae_samples and "log_q" in terms:
            # log p(x) >= E log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x) (Burda et al. 2016).
            def log_weights(k):
                t = model.apply({"params": params}, batch, rngs={"noise": k})
                return t["log_p_x_given_z"] + t["log_p"] - t["log_q"]

            logw = jax.lax.map(log_weights, jax.random.split(jax.random.fold_in(key, 1), iwae_samples))
            bound = jax.scipy.special.logsumexp(logw, axis=0) - jnp.log(iwae_samples)
            sums["iwae_nll"] = -jnp.sum(bound)
        return sums

    return eval_step


# ----------------------------------------------------------------------------------------------- files


def finished_results(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """The results of the finished run of this config in `workdir` (None if it is not finished there);
    refuses a work directory that holds another run. Reads no data."""
    _check_workdir_config(config, workdir)
    results_path = os.path.join(workdir, "results.json")
    if not os.path.exists(results_path):
        return None
    with open(results_path) as f:
        return json.load(f)


def _check_workdir_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        if glob.glob(os.path.join(workdir, "checkpoint*.msgpack")) or os.path.exists(os.path.join(workdir, "results.json")):
            raise WorkdirError(
                f"workdir {workdir} holds run files but no config.json, so nothing says which run they belong to; "
                "use a new --workdir, or delete that one to start over"
            )
        return
    with open(config_path) as f:
        existing = json.load(f)
    resolved = json.loads(config.to_json_best_effort())
    # A field added to the configs after this workdir was written matches when it keeps its default.
    added_defaults = json.loads(defaults.rate_distortion_config().to_json_best_effort())
    for name in set(resolved) - set(existing):
        if name in added_defaults:
            existing[name] = added_defaults[name]
    differing = sorted(k for k in set(existing) | set(resolved) if existing.get(k) != resolved.get(k))
    if differing:
        raise WorkdirError(
            f"workdir {workdir} holds another run (its config differs in: {', '.join(differing)}); "
            "use a new --workdir, or delete that one to start over"
        )


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Creates the work directory, or checks that the run it holds is this one; removes temporary files
    left by an interrupted write."""
    _check_workdir_config(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() != 0:
        return
    for stale in glob.glob(os.path.join(workdir, ".tmp-*")):
        os.remove(stale)
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        write_atomic(config_path, json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True))


def run_layout(workdir: str, runs: list, decide_chunk_size: Callable[[str], int],
               decide_data_loop: Callable[[], str]) -> tuple[int, str]:
    """How the run meets the hardware, decided once and recorded in the work directory's layout.json, then
    reused on resume: the models per program (so a checkpoint always meets the same models) and the data
    loop, ``host`` or ``device`` (so a resumed run continues the same data stream, even where ``auto``
    would now choose the other loop; a layout written before the on-device loop existed means ``host``).

    Args:
      workdir: the run's directory.
      runs: the (beta, seed) pairs of the run.
      decide_chunk_size: ``data_loop -> models per program``, asked for a new run only.
      decide_data_loop: ``() -> "host" | "device"``, asked for a new run only.

    Returns:
      (chunk_size, data_loop).
    """
    path = os.path.join(workdir, "layout.json")
    runs = [list(r) for r in runs]
    if os.path.exists(path):
        with open(path) as f:
            layout = json.load(f)
        if layout["runs"] != runs:
            raise WorkdirError(f"{path} records other (beta, seed) runs than this config's; use a new --workdir")
        return int(layout["chunk_size"]), layout.get("data_loop", "host")
    data_loop = decide_data_loop()
    chunk_size = decide_chunk_size(data_loop)
    if jax.process_index() == 0:
        write_atomic(path, json.dumps({"runs": runs, "chunk_size": chunk_size, "data_loop": data_loop}))
    return chunk_size, data_loop


def _hardware_layout(config, workdir: str, runs: list, train_set, train_step, init, sample) -> tuple[int, str]:
    """`run_layout` for this config: the data loop its ``data_loop`` resolves to, and the models that fit
    in a device's memory beside the split when the split lives there."""
    memory = sweep.device_memory_bytes()
    split_bytes = functools.cache(lambda: device_loop.data_bytes(train_set))

    def decide_data_loop() -> str:
        data_loop = config.get("data_loop", "auto")
        return "host" if data_loop == "host" else device_loop.resolve_data_loop(data_loop, split_bytes(), memory)

    def decide_chunk_size(data_loop: str) -> int:
        if config.models_per_program:
            return config.models_per_program
        spare = memory - split_bytes() if data_loop == "device" else None
        return sweep.models_per_program(train_step, init, sample, len(runs), config.sweep_strategy,
                                        capacity_bytes=spare)

    return run_layout(workdir, runs, decide_chunk_size, decide_data_loop)


def _to_python(tree):
    return jax.tree.map(lambda x: np.asarray(x).tolist(), tree)


# ----------------------------------------------------------------------------------------------- the run


def evaluate(population: sweep.Population, eval_step, dataset, batch_size: int, key: jax.Array) -> list[dict]:
    """Mean test terms of every model, over the full batches of `dataset`, with a fixed key."""
    totals, count = None, 0
    for i, batch in enumerate(data_lib.eval_batches(dataset, batch_size)):
        sums = population.evaluate(eval_step, jnp.asarray(batch), jax.random.fold_in(key, i))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        count += batch.shape[0]
    means = sweep.to_host(jax.tree.map(lambda x: x / count, totals))
    return [
        {name: float(values[m]) for name, values in means.items()} for m in range(population.num_models)
    ]


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    on_step: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Trains every (beta, seed) model of the config on the same data stream and evaluates it.

    Args:
      config: see `echo_jax.defaults.rate_distortion_config`.
      workdir: where the run's files go; an existing run there of the same config is resumed.
      on_step: called with the step number after every update (progress hooks, tests); with the on-device
        loop (``data_loop``), for each update of a dispatch once the dispatch is issued.
      should_stop: asked before every dispatch (every update with the host loop, every ``steps_per_call``
        updates at most with the on-device loop); when it answers True the run saves a checkpoint at that
        step and raises `RunInterrupted` (rerunning the work directory resumes there).

    Returns:
      The content of results.json.
    """
    validation.validate_config(config)
    finished = finished_results(config, workdir)
    if finished is not None:
        logging.info("%s already holds the finished run; returning its results", workdir)
        return finished
    train_set, test_set = load_datasets(config)
    prepare_workdir(config, workdir)
    results_path = os.path.join(workdir, "results.json")

    runs = sweep.runs_of(config)
    steps_per_epoch = data_lib.num_batches(train_set, config.batch_size)
    model = make_model(config, train_set.image_shape)
    optimizer = make_optimizer(config, steps_per_epoch)
    sample = jnp.asarray(next(data_lib.eval_batches(train_set, config.batch_size)))
    mean_image = jnp.asarray(train_set.images[: min(len(train_set), 10_000)].mean(axis=0), jnp.float32)
    weights = dict(mmd_weight=config.mmd_weight, tc_weight=config.tc_weight)
    train_step = make_train_step(model, optimizer, **weights)
    init = jax.vmap(lambda k: create_train_state(model, optimizer, k, sample, mean_image))
    chunk_size, data_loop = _hardware_layout(config, workdir, runs, train_set, train_step, init, sample)
    # The IWAE bound costs iwae_samples forward passes: only the final evaluation computes it.
    eval_step = make_eval_step(model, **weights)
    iwae_samples = config.iwae_samples if config.encoder != "echo" else 0
    final_eval_step = make_eval_step(model, **weights, iwae_samples=iwae_samples) if iwae_samples else eval_step

    final_eval = None
    if config.experiment == "disentanglement":
        heldout = test_set if config.dataset == "dsprites_correlated" else None
        final_eval = lambda params: disentanglement.evaluate_model(model, params, config, heldout)
    test, seconds, extra = [], [], []
    for first in range(0, len(runs), chunk_size):
        chunk = runs[first : first + chunk_size]
        keys = jnp.stack([jax.random.PRNGKey(seed) for _, seed in chunk])
        betas = jnp.asarray([beta for beta, _ in chunk], jnp.float32)
        population = sweep.Population(train_step, init, keys, betas, strategy=config.sweep_strategy)
        name = "checkpoint.msgpack" if chunk_size >= len(runs) else f"checkpoint-{first // chunk_size}.msgpack"
        identity = {"runs": [list(r) for r in chunk], "chunk": first // chunk_size, "chunk_size": chunk_size,
                    "num_models": len(runs)}
        chunk_test, chunk_extra, chunk_seconds = _train_population(
            config, workdir, population, chunk, (eval_step, final_eval_step), train_set, test_set,
            os.path.join(workdir, name), identity, on_step, should_stop, final_eval, data_loop,
        )
        test += chunk_test
        extra += chunk_extra
        seconds += [chunk_seconds] * len(chunk)
    total_steps = _total_steps(config, steps_per_epoch)
    results = {
        "experiment": config.experiment,
        "results": [
            {
                "beta": beta, "seed": seed, "dataset": config.dataset, "network": config.network,
                "encoder": config.encoder, "marginal": config.marginal, "test": test[m],
                "steps": total_steps, "seconds": seconds[m], "data_loop": data_loop, **extra[m],
            }
            for m, (beta, seed) in enumerate(runs)
        ],
    }
    if jax.process_index() == 0:
        write_atomic(results_path, dumps_strict(results, indent=2))
    return results


def _train_population(config, workdir, population, runs, eval_steps, train_set, test_set, checkpoint_path,
                      identity, on_step, should_stop, final_eval, data_loop: str = "host",
                      ) -> tuple[list[dict], list[dict], float]:
    """Trains one population of models to the end (resuming from its checkpoint) and evaluates them.

    Each dispatch runs one update (the host loop) or up to ``steps_per_call`` updates (the on-device loop),
    never across a log, checkpoint, evaluation or epoch boundary; `should_stop` is asked between
    dispatches and `on_step` is called for every update once its dispatch is issued.

    Returns:
      The test terms of every model, each model's extra results (``final_eval(params)`` under the
      experiment's name, or nothing), and the seconds the population's training and evaluation took.
    """
    eval_step, final_eval_step = eval_steps
    steps_per_epoch = data_lib.num_batches(train_set, config.batch_size)
    total_steps = _total_steps(config, steps_per_epoch)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    restored = _restore(population, checkpoint_path, identity, metrics_path, runs, total_steps)
    if "test" in restored:  # this population finished before the run was interrupted
        return restored["test"], restored["extra"], restored["seconds"]
    step, seconds = restored["step"], restored["seconds"]

    def save_checkpoint(at_step: int, elapsed: float, test=None, extra=None) -> None:
        _save_checkpoint(population, checkpoint_path, identity, at_step, elapsed, test, extra,
                         lambda what: _diverged(what, workdir, checkpoint_path, last_good))

    checkpoint_every = config.checkpoint_every_steps or steps_per_epoch
    boundaries = (config.log_every_steps, steps_per_epoch, checkpoint_every)
    advance = _make_advance(config, population, train_set, data_loop, step)
    eval_key = jax.random.PRNGKey(data_seed_of(config) + 12)  # fixed: evaluation noise is the same at every eval
    start = time.perf_counter() - seconds
    last_good = step
    while step < total_steps:
        # Asked before a dispatch, never between an epoch's last step and its evaluation.
        if should_stop is not None and should_stop():
            if last_good != step:
                save_checkpoint(step, time.perf_counter() - start)
            raise RunInterrupted(f"stopped at step {step} of {total_steps}; rerun to resume from {checkpoint_path}")
        done = advance(step, device_loop.steps_to_boundary(step, boundaries, total_steps))
        for update in range(step + 1, step + done + 1):
            if on_step is not None:
                on_step(update)
        step += done
        if step % config.log_every_steps == 0 or step % steps_per_epoch == 0:
            _log_train(population, runs, step, total_steps, steps_per_epoch, metrics_path,
                       lambda what: _diverged(what, workdir, checkpoint_path, last_good))
        if step % checkpoint_every == 0 and step < total_steps:
            save_checkpoint(step, time.perf_counter() - start)
            last_good = step
        if step % steps_per_epoch == 0 and (step // steps_per_epoch) % config.eval_every_epochs == 0 \
                and step < total_steps:
            test = evaluate(population, eval_step, test_set, config.batch_size, eval_key)
            _check_finite_test(test, runs, step, workdir, checkpoint_path, last_good)
            _log_test(metrics_path, step, steps_per_epoch, runs, test)

    test = evaluate(population, final_eval_step, test_set, config.batch_size, eval_key)
    _check_finite_test(test, runs, step, workdir, checkpoint_path, last_good)
    _log_test(metrics_path, step, steps_per_epoch, runs, test)
    extra = [{} for _ in runs]
    if final_eval is not None:
        params = population.stacked_states().params
        extra = [{config.experiment: final_eval(jax.tree.map(lambda x: x[m], params))} for m in range(len(runs))]
    seconds = time.perf_counter() - start
    save_checkpoint(step, seconds, test=test, extra=extra)
    return test, extra, seconds


def _save_checkpoint(population, path: str, identity: dict, at_step: int, elapsed: float, test, extra,
                     diverged: Callable[[str], Exception]) -> None:
    """Writes the population's states (and, when finished, its results) atomically; raises
    `diverged(what)` instead if a parameter is non-finite, keeping the last good checkpoint."""
    states = sweep.to_host(population.stacked_states())
    if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(states.params)):
        raise diverged(f"the parameters became non-finite by step {at_step}")
    payload = {"states": serialization.to_state_dict(states), "step": at_step, "seconds": elapsed,
               "identity": json.dumps(identity)}
    if test is not None:
        payload["test"], payload["extra"] = dumps_strict(test), dumps_strict(extra)
    if jax.process_index() == 0:
        write_atomic(path, serialization.msgpack_serialize(payload))


def _restore(population, checkpoint_path: str, identity: dict, metrics_path: str, runs, total_steps: int) -> dict:
    """Loads the population's checkpoint, if there is one, and trims the metrics logged after it.

    Returns:
      ``{"step", "seconds"}`` to resume from (0, 0.0 for a fresh start), plus ``"test"`` and ``"extra"``
      when the checkpoint holds a finished population.
    """
    step, seconds = 0, 0.0
    if os.path.exists(checkpoint_path):
        restored = _read_checkpoint(checkpoint_path, identity)
        if "test" in restored:
            return {"test": json.loads(restored["test"]), "extra": json.loads(restored["extra"]),
                    "seconds": float(restored["seconds"])}
        population.load_states(serialization.from_state_dict(population.stacked_states(), restored["states"]))
        step, seconds = int(restored["step"]), float(restored["seconds"])
        logging.info("resumed %s at step %d of %d", checkpoint_path, step, total_steps)
    if jax.process_index() == 0:
        trim_metrics(metrics_path, runs, step)
    return {"step": step, "seconds": seconds}


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


def _log_train(population, runs, step: int, total_steps: int, steps_per_epoch: int, metrics_path: str,
               diverged: Callable[[str], Exception]) -> None:
    """Logs the last update's training terms; raises `diverged(what)` if any model's are non-finite."""
    host = sweep.to_host(population.last_metrics())
    finite = np.all([np.isfinite(v) for v in host.values()], axis=0)
    if not np.all(finite):
        bad = [runs[m] for m in np.flatnonzero(~finite)]
        raise diverged(f"training became non-finite at step {step} for (beta, seed) {bad}")
    record = {"split": "train", "step": step, "epoch": step / steps_per_epoch,
              "beta": [b for b, _ in runs], "seed": [s for _, s in runs], **_to_python(host)}
    if jax.process_index() == 0:
        append_jsonl(metrics_path, record)
    logging.info(
        "step %d/%d (epoch %.2f): loss %s rate %s distortion %s", step, total_steps,
        step / steps_per_epoch, _fmt(host["loss"]), _fmt(host["rate"]), _fmt(host["distortion"]),
    )


def _read_checkpoint(path: str, identity: dict) -> dict:
    """A checkpoint's content, after checking that it holds the models this program trains."""
    try:
        with open(path, "rb") as f:
            restored = serialization.msgpack_restore(f.read())
    except Exception as e:  # noqa: BLE001 - msgpack raises several types for a damaged file
        raise WorkdirError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it to restart that "
                           "part of the run from its beginning") from None
    if "identity" not in restored and identity["chunk_size"] >= identity["num_models"]:
        return restored  # written before checkpoints named their models: a whole-sweep checkpoint of this config
    held = json.loads(restored["identity"]) if "identity" in restored else None
    if held != identity:
        raise WorkdirError(
            f"checkpoint {path} holds other models than this run's (it holds {held and held['runs']}, this run "
            f"trains {identity['runs']} in programs of {identity['chunk_size']}); use a new --workdir"
        )
    return restored


def trim_metrics(path: str, runs: list, step: int) -> None:
    """Drops the records of these runs logged after `step` (work lost to an interruption, about to be redone)."""
    if not os.path.exists(path):
        return
    betas, seeds = [b for b, _ in runs], [s for _, s in runs]
    with open(path) as f:
        lines = f.readlines()
    kept = [line for line in lines if not _later_record(json.loads(line), betas, seeds, step)]
    if len(kept) != len(lines):
        write_atomic(path, "".join(kept))


def _later_record(record: dict, betas: list, seeds: list, step: int) -> bool:
    return record["beta"] == betas and record["seed"] == seeds and record["step"] > step


def _diverged(what: str, workdir: str, checkpoint_path: str, last_good: int) -> DivergedError:
    """The error of a diverged run: what happened, which checkpoint exists, and what to do."""
    if last_good > 0 and os.path.exists(checkpoint_path):
        kept = f"the last finite checkpoint (step {last_good}) is kept in {checkpoint_path}"
    else:
        kept = "no checkpoint was written before that"
    return DivergedError(
        f"{what}; {kept}. Lower learning_rate (or check the data) and train in a new --workdir: {workdir} "
        "is locked to this config (delete it to start over)"
    )


def _check_finite_test(test: list[dict], runs, step: int, workdir: str, checkpoint_path: str, last_good: int):
    bad = [runs[m] for m, row in enumerate(test) if not all(np.isfinite(v) for v in row.values())]
    if bad:
        raise _diverged(f"the test evaluation at step {step} is non-finite for (beta, seed) {bad}", workdir,
                        checkpoint_path, last_good)


def data_seed_of(config: ml_collections.ConfigDict) -> int:
    """The seed of the run's data stream (order and binarization of the batches): data_seed, else seed."""
    data_seed = config.get("data_seed")
    return config.seed if data_seed is None else data_seed


def _total_steps(config, steps_per_epoch: int) -> int:
    return config.num_train_steps or steps_per_epoch * config.num_epochs


def _log_test(metrics_path, step, steps_per_epoch, runs, test) -> None:
    if jax.process_index() == 0:
        append_jsonl(metrics_path, {"split": "test", "step": step, "epoch": step / steps_per_epoch,
                                    "beta": [b for b, _ in runs], "seed": [s for _, s in runs], "test": test})
        for (beta, seed), row in zip(runs, test):
            logging.info("test (beta %g, seed %d): %s", beta, seed, {k: round(v, 3) for k, v in row.items()})


def _fmt(values) -> str:
    values = np.atleast_1d(values)
    return ",".join(f"{v:.2f}" for v in values[:8]) + ("..." if values.size > 8 else "")
