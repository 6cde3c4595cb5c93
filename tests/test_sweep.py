"""Beta sweeps: one program for many betas, equal to single runs, sharded over devices, chunked to fit."""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from echo_jax import defaults, steps, sweep, train
from tests.helpers import run_on_cpu_devices, tiny


def _strip(results):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in results["results"]]


def _tests(results):
    return np.array([[row["test"][k] for k in ("rate", "distortion")] for row in results["results"]])


@pytest.mark.parametrize("encoder, marginal", [("echo", "none"), ("gaussian", "std_normal")])
def test_sweep_equals_single_runs(encoder, marginal, tmp_path):
    base = dict(encoder=encoder, marginal=marginal, iwae_samples=0)
    singles = [
        train.train_and_evaluate(tiny(defaults.rate_distortion_config(True), beta=b, **base), str(tmp_path / f"b{b}"))
        for b in (0.25, 4.0)
    ]
    expected = np.concatenate([_tests(r) for r in singles])
    for strategy in ("sequential", "vmap"):
        config = tiny(defaults.rate_distortion_config(True), betas="0.25,4", sweep_strategy=strategy, **base)
        swept = train.train_and_evaluate(config, str(tmp_path / strategy))
        assert [row["beta"] for row in swept["results"]] == [0.25, 4.0]
        np.testing.assert_allclose(_tests(swept), expected, rtol=2e-4, atol=1e-3)
    # beta matters: the two models differ (the high-beta one has the lower rate).
    assert expected[1, 0] < expected[0, 0]


def test_seeds_axis(tmp_path):
    config = tiny(defaults.rate_distortion_config(True), betas="1", num_seeds=2, iwae_samples=0)
    results = train.train_and_evaluate(config, str(tmp_path))
    assert [(r["beta"], r["seed"]) for r in results["results"]] == [(1.0, 0), (1.0, 1)]
    a, b = _tests(results)
    assert not np.allclose(a, b)  # different initialisations and noise


def _population(strategy, betas, train_step=None):
    config = tiny(defaults.rate_distortion_config(True), iwae_samples=0)
    model = steps.make_model(config, (28, 28, 1))
    optimizer = steps.make_optimizer(config, 4)
    sample = jnp.zeros((16, 28, 28, 1))
    init = jax.vmap(lambda k: steps.create_train_state(model, optimizer, k, sample, sample[0]))
    step = train_step or steps.make_train_step(model, optimizer)
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(len(betas))])
    return sweep.Population(step, init, keys, jnp.asarray(betas, jnp.float32), strategy=strategy), sample


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_one_compile_whatever_the_betas(strategy):
    chex.clear_trace_counter()  # the counter is per function code, shared by the parametrized cases
    config = tiny(defaults.rate_distortion_config(True))
    model = steps.make_model(config, (28, 28, 1))
    optimizer = steps.make_optimizer(config, 4)
    counted = chex.assert_max_traces(steps.make_train_step(model, optimizer), n=1)
    population, batch = _population(strategy, [0.1, 1.0, 10.0], counted)
    for _ in range(3):
        population.step(batch + 0.5)
    if strategy == "sequential":  # a second sweep with other betas reuses the compiled step
        other, _ = _population(strategy, [0.3, 3.0], counted)
        other.step(batch)


def test_auto_strategy_per_backend():
    expected = "sequential" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "vmap"
    assert sweep.resolve_strategy("auto") == expected
    with pytest.raises(ValueError, match="unknown sweep strategy"):
        sweep.resolve_strategy("pmap")


def test_memory_planning_splits_sweeps_that_do_not_fit():
    batch = jnp.zeros((16, 28, 28, 1))
    config = tiny(defaults.rate_distortion_config(True))
    model = steps.make_model(config, (28, 28, 1))
    optimizer = steps.make_optimizer(config, 4)
    step = steps.make_train_step(model, optimizer)
    init = jax.vmap(lambda k: steps.create_train_state(model, optimizer, k, batch, batch[0]))
    per_model = sweep.model_bytes(step, init, batch, "vmap")
    assert per_model > sweep.model_bytes(step, init, batch, "sequential") > 0  # temporaries count too
    fits = lambda n_models: sweep.models_per_program(
        step, init, batch, 16, "vmap", capacity_bytes=int(per_model * n_models / 0.7) + 1
    )
    assert fits(100) == 16 and fits(5) == 5 and fits(1) == 1
    with pytest.raises(MemoryError, match="smaller batch_size"):
        fits(0.5)


def test_chunked_sweep_equals_one_program(tmp_path):
    base = dict(betas="0.5,1,2", iwae_samples=0, sweep_strategy="vmap")
    whole = train.train_and_evaluate(tiny(defaults.rate_distortion_config(True), **base), str(tmp_path / "a"))
    chunked_config = tiny(defaults.rate_distortion_config(True), models_per_program=2, **base)
    chunked = train.train_and_evaluate(chunked_config, str(tmp_path / "b"))
    assert sorted(p for p in os.listdir(tmp_path / "b") if p.startswith("checkpoint")) == [
        "checkpoints-0",
        "checkpoints-1",
    ]
    np.testing.assert_allclose(_tests(chunked), _tests(whole), rtol=2e-4, atol=1e-3)


FOUR_DEVICES = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from echo_jax import defaults, train, sweep
    from tests.test_sweep import _population
    assert jax.device_count() == 4, jax.devices()
    out = {}
    for name, betas in [("even", [0.5, 1.0, 2.0, 4.0]), ("uneven", [0.5, 2.0, 8.0])]:
        sharded, batch = _population("vmap", betas)
        assert len(sharded._models.states.params["head"]["fx"]["kernel"].sharding.device_set) == 4
        single, _ = _population("sequential", betas)
        for step in range(3):
            sharded.step(batch + 0.1 * step)
            single.step(batch + 0.1 * step)
        a, b = sharded.last_metrics(), single.last_metrics()
        pa = jax.device_get(sharded.stacked_states().params)
        pb = jax.device_get(single.stacked_states().params)
        diffs = [float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb))]
        out[name] = {"models": len(jax.tree.leaves(pa)[0]), "max_param_diff": max(diffs),
                     "loss_diff": float(np.max(np.abs(np.asarray(a["loss"]) - np.asarray(b["loss"]))))}
    print(json.dumps(out))
    """
)


def test_sharded_sweep_on_four_devices_equals_unsharded():
    out = run_on_cpu_devices(FOUR_DEVICES)
    assert out["even"]["models"] == 4 and out["uneven"]["models"] == 3  # padding is dropped
    for case in out.values():
        assert case["max_param_diff"] < 1e-4 and case["loss_diff"] < 1e-2


TWO_PROCESSES = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    from echo_jax import defaults, train
    from tests.helpers import tiny
    config = tiny(defaults.rate_distortion_config(True), betas="0.5,2", iwae_samples=0)
    results = train.train_and_evaluate(config, sys.argv[3])
    print(json.dumps({"devices": jax.device_count(), "test": [r["test"] for r in results["results"]]}))
    """
)


def test_two_processes_share_one_sweep(tmp_path):
    # Two hosts simulated by two processes on loopback, one CPU device each: the model axis spans both,
    # both see the same results, and only process 0 writes files.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    workdirs = [tmp_path / "p0", tmp_path / "p1"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_PROCESSES, f"127.0.0.1:{port}", str(i), str(workdirs[i])],
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert results[0] == results[1] and results[0]["devices"] == 2
    single = train.train_and_evaluate(
        tiny(defaults.rate_distortion_config(True), betas="0.5,2", iwae_samples=0), str(tmp_path / "single")
    )
    np.testing.assert_allclose(
        [[t["rate"], t["distortion"]] for t in results[0]["test"]], _tests(single), rtol=2e-4, atol=1e-3
    )
    assert (workdirs[0] / "results.json").exists() and not (workdirs[1] / "config.json").exists()
