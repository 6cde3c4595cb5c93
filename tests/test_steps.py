"""The optimiser's learning-rate schedule: never negative, over the run's total steps, and unchanged for runs
that set num_epochs (the committed results were trained with it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from echo_jax import defaults, steps


def committed_schedule(config, steps_per_epoch):
    """The schedule as it was when the committed results were trained (a copy, independent of echo_jax):
    a per-epoch staircase over num_epochs, blind to num_train_steps."""
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


def make_config(num_epochs, learning_rate, lr_schedule, num_train_steps=0):
    config = defaults.rate_distortion_config()
    config.num_epochs, config.learning_rate, config.lr_schedule = num_epochs, learning_rate, lr_schedule
    config.num_train_steps = num_train_steps
    return config


def rates(schedule, counts, jit):
    """The schedule at every count, as optax calls it (one int32 count at a time), eagerly or compiled."""
    fn = jax.vmap(schedule)
    fn = jax.jit(fn) if jit else fn
    return np.asarray(fn(jnp.asarray(counts, jnp.int32)))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "num_epochs, steps_per_epoch, learning_rate, lr_schedule",
    [
        (100, 500, 1e-3, "linear_decay"),  # configs/campaigns/paper_mlp.py
        (200, 500, 3e-4, "linear_decay"),  # the defaults
        (5, 90, 1e-3, "linear_decay"),
        (7, 13, 3e-4, "linear_decay"),  # an odd num_epochs: the half is not a whole epoch
        (200, 500, 3e-4, "as_coded"),
        (100, 500, 1e-3, "as_coded"),
        (5, 90, 1e-3, "as_coded"),
        (7, 13, 3e-4, "as_coded"),
        (26, 4680, 1e-4, "constant"),
    ],
)
def test_with_num_train_steps_0_every_rate_is_bit_identical_to_the_committed_schedule(
    num_epochs, steps_per_epoch, learning_rate, lr_schedule, jit
):
    config = make_config(num_epochs, learning_rate, lr_schedule)
    total = num_epochs * steps_per_epoch
    # Every count a run uses (0 .. total - 1), and the epoch after it, where the old schedule was still >= 0.
    counts = np.arange(total + steps_per_epoch)
    new = rates(steps.learning_rate_schedule(config, steps_per_epoch), counts, jit)
    old = rates(committed_schedule(config, steps_per_epoch), counts, jit)
    assert new.dtype == old.dtype == np.float32
    mismatched = np.flatnonzero(new.view(np.uint32) != old.view(np.uint32))
    assert mismatched.size == 0, (
        f"first differing count {mismatched[:5]}: {new[mismatched[:5]]} != {old[mismatched[:5]]}"
    )


@pytest.mark.parametrize("lr_schedule", ["linear_decay", "as_coded", "constant"])
@pytest.mark.parametrize(
    "num_train_steps",
    [
        1,
        7,
        10_000,  # below num_epochs epochs
        12_345,  # not a whole number of epochs
        50_000,  # exactly num_epochs epochs
        123_456,  # beyond num_epochs epochs: the old schedule went negative from step 50,500 on
    ],
)
def test_the_rate_is_never_negative_and_is_constant_after_the_run(num_train_steps, lr_schedule):
    config = make_config(100, 1e-3, lr_schedule, num_train_steps=num_train_steps)
    schedule = steps.learning_rate_schedule(config, steps_per_epoch=500)
    counts = np.arange(3 * num_train_steps + 1000)
    lr = rates(schedule, counts, jit=True)
    assert np.all(lr >= 0), f"negative at counts {np.flatnonzero(lr < 0)[:5]}"
    assert np.all(lr <= np.float32(1e-3))
    after = lr[num_train_steps:]
    assert np.all(after == after[0])
    assert after[0] == (0.0 if lr_schedule == "linear_decay" else np.float32(1e-3))


@pytest.mark.parametrize("num_train_steps", [10_000, 12_345, 123_456])
def test_linear_decay_runs_over_num_train_steps_and_ends_at_0(num_train_steps):
    config = make_config(100, 1e-3, "linear_decay", num_train_steps=num_train_steps)
    schedule = steps.learning_rate_schedule(config, steps_per_epoch=500)
    epochs = num_train_steps / 500
    lr = lambda count: float(schedule(jnp.asarray(count, jnp.int32)))
    assert lr(0) == lr(int(epochs / 2) * 500) == pytest.approx(1e-3)
    # Decaying once an epoch over the second half of the run's steps, not of num_epochs.
    late = int(epochs * 3 / 4)
    assert lr(late * 500 + 3) == pytest.approx(1e-3 * (epochs - late) / (epochs / 2), rel=1e-5)
    assert 0 < lr(num_train_steps - 1) < 1e-3 * 2.001 / epochs  # at most one epoch of decay left
    assert lr(num_train_steps) == 0.0


def test_the_rate_of_a_run_with_num_train_steps_equals_the_same_run_in_epochs():
    by_steps = steps.learning_rate_schedule(make_config(100, 1e-3, "linear_decay", num_train_steps=3000), 500)
    by_epochs = steps.learning_rate_schedule(make_config(6, 1e-3, "linear_decay"), 500)
    counts = np.arange(4000)
    np.testing.assert_array_equal(rates(by_steps, counts, jit=True), rates(by_epochs, counts, jit=True))


def test_total_train_steps():
    assert steps.total_train_steps(make_config(100, 1e-3, "linear_decay"), 500) == 50_000
    assert steps.total_train_steps(make_config(100, 1e-3, "linear_decay", num_train_steps=7), 500) == 7
