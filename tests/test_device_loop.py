"""The on-device training loop: batches cut on the device, K steps per dispatch, equal to K = 1 and resumable."""

import json
import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from echo_jax import defaults, device_loop, steps, sweep, train, workdir
from echo_jax.data.datasets import ArrayDataset
from tests.helpers import run_on_cpu_devices, tiny


def _dataset(images, binarize="none"):
    return ArrayDataset(
        name="synthetic", split="train", images=np.asarray(images, np.float32), labels=None, binarize=binarize
    )


def _population(strategy, num_models=2, batch_size=16):
    config = tiny(defaults.rate_distortion_config(True), batch_size=batch_size)
    model = steps.make_model(config, (28, 28, 1))
    optimizer = steps.make_optimizer(config, 8)
    sample = jnp.zeros((batch_size, 28, 28, 1))
    init = jax.vmap(lambda k: steps.create_train_state(model, optimizer, k, sample, sample[0]))
    keys = jnp.stack([jax.random.PRNGKey(m) for m in range(num_models)])
    return sweep.Population(
        steps.make_train_step(model, optimizer), init, keys, jnp.linspace(0.5, 2.0, num_models), strategy=strategy
    )


@pytest.mark.parametrize("strategy", ["sequential", "vmap"])
def test_one_and_fifty_steps_per_dispatch_give_identical_states(strategy):
    # Bitwise on XLA:CPU: the scan's body is the same step (other backends may fuse it differently).
    images = np.random.default_rng(0).random((800, 28, 28, 1))
    states, metrics = [], []
    for k in (1, 50):
        population = _population(strategy)
        data = population.device_data(_dataset(images, "dynamic"), 16, seed=3)
        order = device_loop.epoch_order(data, 0)
        for start in range(0, 50, k):
            population.run_steps(data, order, 0, start, k)
        states.append(jax.device_get(population.stacked_states()))
        metrics.append(jax.device_get(population.last_metrics()))
    for a, b in zip(jax.tree.leaves((states[0], metrics[0])), jax.tree.leaves((states[1], metrics[1]))):
        np.testing.assert_array_equal(a, b)
    assert int(states[0].step[0]) == 50


def test_batches_visit_the_split_once_an_epoch_in_a_new_order():
    ids = np.arange(70, dtype=np.float32) / 70  # image i holds the value i / 70 everywhere
    data = device_loop.device_data(_dataset(np.broadcast_to(ids[:, None, None, None], (70, 28, 28, 1))), 16, seed=5)
    assert data.steps_per_epoch == 4  # full batches only: 6 examples dropped
    seen = {}
    for epoch in (0, 1):
        batches = [np.asarray(device_loop.batch_at(data, epoch, step)) for step in range(4)]
        assert all(b.shape == (16, 28, 28, 1) and b.dtype == np.float32 for b in batches)
        seen[epoch] = np.rint(np.concatenate(batches)[:, 0, 0, 0] * 70).astype(int)
        assert len(set(seen[epoch])) == 64 and set(seen[epoch]) <= set(range(70))
    assert not np.array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(device_loop.batch_at(data, 1, 2), device_loop.batch_at(data, 1, 2))


def test_dynamic_binarization_is_a_bernoulli_draw_per_step_and_binary_splits_are_stored_as_uint8():
    grey = np.broadcast_to(np.linspace(0.05, 0.95, 28 * 28).reshape(1, 28, 28, 1), (400, 28, 28, 1))
    data = device_loop.device_data(_dataset(grey, "dynamic"), 100, seed=0)
    draws = np.stack([np.asarray(device_loop.batch_at(data, e, s)) for e in range(5) for s in range(4)])
    assert set(np.unique(draws)) == {0.0, 1.0}
    # 2,000 draws per pixel: the standard error of a pixel's mean is at most 0.011.
    np.testing.assert_allclose(draws.mean(axis=(0, 1)), grey[0], atol=0.05)
    assert abs(draws.mean() - grey.mean()) < 0.003
    assert not np.array_equal(draws[0], draws[1])  # a fresh draw every step

    binary = (grey > 0.5).astype(np.float32)
    stored = device_loop.device_data(_dataset(binary, "static"), 100, seed=0)
    assert stored.images.dtype == jnp.uint8 and device_loop.data_bytes(_dataset(binary, "static")) == binary.size
    batch = np.asarray(device_loop.batch_at(stored, 0, 0))
    assert batch.dtype == np.float32 and np.array_equal(batch, binary[:100])  # every image is the same


def test_data_loop_resolution():
    resolve = device_loop.resolve_data_loop
    on_cpu = device_loop.CPU_DATA_LOOP if jax.default_backend() == "cpu" else "device"
    assert resolve("auto", 10, 100) == on_cpu and resolve("device", 10, 100) == "device"
    assert resolve("host", 10**12, 100) == "host" and resolve("auto", 60, 100) == "host"  # does not fit
    with pytest.raises(MemoryError, match="data_loop='host'"):
        resolve("device", 60, 100)
    with pytest.raises(ValueError, match="unknown data_loop"):
        resolve("gpu", 1, 100)


def test_resume_mid_epoch_gives_the_numbers_of_an_uninterrupted_run(tmp_path):
    base = dict(
        data_loop="device",
        steps_per_call=3,
        num_train_examples=160,
        num_epochs=2,
        log_every_steps=4,
        betas="0.5,2",
        iwae_samples=0,
    )  # 10 steps an epoch; dispatches end at 3 4 7 8 10 12 15 16 19 20
    uninterrupted = train.train_and_evaluate(tiny(defaults.rate_distortion_config(True), **base), str(tmp_path / "a"))
    updates = []
    config = tiny(defaults.rate_distortion_config(True), **base)
    with pytest.raises(train.RunInterrupted, match="stopped at step 15"):
        train.train_and_evaluate(
            config, str(tmp_path / "b"), on_step=updates.append, should_stop=lambda: bool(updates) and updates[-1] > 12
        )
    assert updates == list(range(1, 16))  # every update reported
    assert json.loads((tmp_path / "b" / "layout.json").read_text())["data_loop"] == "device"
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    strip = lambda r: [{k: v for k, v in row.items() if k != "seconds"} for row in r["results"]]
    assert strip(resumed) == strip(uninterrupted)
    logged = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [4, 8, 10, 12, 16, 20, 20]  # log steps and epoch ends (train), then the final test


def test_a_layout_written_before_the_device_loop_resumes_with_the_host_loop(tmp_path):
    runs = [[1.0, 0]]
    (tmp_path / "layout.json").write_text(json.dumps({"runs": runs, "chunk_size": 1}))
    never = lambda *_: pytest.fail("a recorded layout is not decided again")
    assert workdir.layout(str(tmp_path), runs, never, never) == (1, "host")
    os.makedirs(tmp_path / "new")
    assert workdir.layout(str(tmp_path / "new"), runs, lambda loop: 3, lambda: "device") == (3, "device")
    assert json.loads((tmp_path / "new" / "layout.json").read_text())["data_loop"] == "device"


def test_host_and_device_loops_train_equally_well(tmp_path):
    # Other data orders and binarization draws (numpy's PCG64 against jax's threefry), same distributions:
    # the mean final test -ELBO of 4 seeds (about 220 nats, spread 0.6; untrained 543) agrees within 3
    # standard errors of the difference, and at least 0.25 nats (4 seeds estimate the error loosely).
    base = dict(
        num_train_examples=480,
        num_test_examples=320,
        num_epochs=6,
        betas="1",
        num_seeds=4,
        iwae_samples=0,
        log_every_steps=30,
    )
    finals = {}
    for loop in ("host", "device"):
        results = train.train_and_evaluate(
            tiny(defaults.rate_distortion_config(True), data_loop=loop, **base), str(tmp_path / loop)
        )
        finals[loop] = np.array([row["test"]["neg_elbo"] for row in results["results"]])
    untrained = 784 * np.log(2)  # -ELBO of a decoder that predicts 1/2 everywhere
    assert np.all(finals["device"] < 0.6 * untrained)  # both trained
    diff = finals["device"].mean() - finals["host"].mean()
    se = np.sqrt((finals["device"].var(ddof=1) + finals["host"].var(ddof=1)) / 4)
    assert abs(diff) <= max(3 * se, 0.25), (finals, diff, se)


FOUR_DEVICES = textwrap.dedent(
    """
    import json
    import jax, numpy as np
    from echo_jax import device_loop
    from tests.test_device_loop import _dataset, _population
    assert jax.device_count() == 4
    images = np.random.default_rng(0).random((96, 28, 28, 1))
    params = {}
    for strategy in ("vmap", "sequential"):
        population = _population(strategy, num_models=3)
        data = population.device_data(_dataset(images, "dynamic"), 16, seed=1)
        if strategy == "vmap":
            assert len(data.images.sharding.device_set) == 4 and data.images.sharding.is_fully_replicated
        for epoch in range(2):  # 6 steps an epoch
            order = device_loop.epoch_order(data, epoch)
            population.run_steps(data, order, epoch, 0, 3)
            population.run_steps(data, order, epoch, 3, 3)
        params[strategy] = jax.device_get(population.stacked_states().params)
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(*(jax.tree.leaves(p) for p in params.values()))]
    print(json.dumps({"max_param_diff": max(diffs)}))
    """
)


def test_sharded_sweep_on_four_devices_equals_back_to_back_steps():
    assert run_on_cpu_devices(FOUR_DEVICES)["max_param_diff"] < 1e-4
