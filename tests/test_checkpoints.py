"""Checkpoints: orbax round trips of stacked train states, retention, atomicity, damage, and 0.1's msgpack files
(read, and converted once)."""

import json
import logging
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from absl import logging as absl_logging
from flax import serialization

from echo_jax.checkpoints import Checkpointer, convert_msgpack_checkpoint, read_msgpack_checkpoint
from echo_jax.errors import DiskFullError, WorkdirError
from echo_jax.files import write_atomic
from echo_jax.steps import TrainState

NUM_MODELS = 3


def make_states(seed: int = 0) -> TrainState:
    """Three models' train states stacked on a leading axis, one Adam step in (so no moment is zero)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = {
        "dense": {
            "kernel": jax.random.normal(keys[0], (NUM_MODELS, 4, 3)),
            "bias": jax.random.normal(keys[1], (NUM_MODELS, 3)),
        }
    }
    optimizer = optax.adam(1e-3)
    opt_state = jax.vmap(optimizer.init)(params)
    grads = jax.tree.map(lambda p: jnp.sin(p) + 0.5, params)
    updates, opt_state = jax.vmap(optimizer.update)(grads, opt_state, params)
    return TrainState(
        step=jnp.full((NUM_MODELS,), 1, jnp.int32),
        params=optax.apply_updates(params, updates),
        opt_state=opt_state,
        key=jax.random.split(keys[2], NUM_MODELS),
    )


def assert_bit_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype and a.shape == e.shape
        assert a.tobytes() == e.tobytes()


META = {
    "identity": {"runs": [["echo", 0.5, 1], ["vae", 1.0, 2]], "chunk_size": 2},
    "seconds": 12.25,
    "test": [{"rate": 3.5, "nested": {"x": [1, 2.5, None, True]}}],
    "extra": [{}, {}],
}


@pytest.fixture
def states():
    return jax.device_get(make_states())


def test_round_trip_is_bit_exact_with_numpy_and_jax_templates(tmp_path, states):
    with Checkpointer(str(tmp_path / "ckpt")) as checkpointer:
        assert checkpointer.latest_step() is None
        checkpointer.save(5, states, META)
        assert checkpointer.latest_step() == 5
        restored, meta = checkpointer.restore(jax.tree.map(np.zeros_like, states))
        assert isinstance(restored, TrainState) and isinstance(restored.params["dense"]["kernel"], np.ndarray)
        assert_bit_equal(restored, states)
        assert meta == META
        on_device, _ = checkpointer.restore(jax.tree.map(jnp.zeros_like, make_states(seed=1)))
        assert isinstance(on_device.params["dense"]["kernel"], jax.Array)
        assert_bit_equal(on_device, states)


def test_jax_states_and_abstract_templates(tmp_path):
    on_device = make_states()
    with Checkpointer(tmp_path) as checkpointer:  # a PathLike works too
        checkpointer.save(0, on_device, {})
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), on_device)
        restored, meta = checkpointer.restore(abstract, step=0)
    assert_bit_equal(restored, on_device) and meta == {}


def test_keeps_the_latest_max_to_keep_steps_and_a_new_instance_finds_them(tmp_path, states):
    directory = str(tmp_path / "ckpt")
    with Checkpointer(directory, max_to_keep=2) as checkpointer:
        for step in (1, 2, 3):
            checkpointer.save(
                step, jax.tree.map(lambda x, s=step: x + s if x.dtype.kind == "f" else x, states), {"step": step}
            )
        assert sorted(os.listdir(directory)) == ["2", "3"]
        assert checkpointer.latest_step() == 3
    with Checkpointer(directory, max_to_keep=2) as checkpointer:
        assert checkpointer.latest_step() == 3
        older, meta = checkpointer.restore(states, step=2)
        assert meta == {"step": 2}
        np.testing.assert_array_equal(older.params["dense"]["bias"], states.params["dense"]["bias"] + 2)
        with pytest.raises(WorkdirError, match=r"holds no step 1 \(it holds 2, 3\)"):
            checkpointer.restore(states, step=1)


def test_a_half_written_save_is_ignored_and_cleared(tmp_path, states):
    directory = tmp_path / "ckpt"
    with Checkpointer(str(directory)) as checkpointer:
        checkpointer.save(1, states, {"step": 1})
    # What a save killed before its final rename leaves behind: orbax's temporary directory of step 2.
    leftover = directory / "2.orbax-checkpoint-tmp"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "manifest.ocdbt").write_bytes(b"partial")
    with Checkpointer(str(directory)) as checkpointer:
        assert checkpointer.latest_step() == 1
        restored, meta = checkpointer.restore(states)
        assert meta == {"step": 1}
        assert_bit_equal(restored, states)
        checkpointer.save(2, states, {"step": 2})
        assert sorted(os.listdir(directory)) == ["1", "2"]
        assert checkpointer.restore(states)[1] == {"step": 2}


# When tensorstore fails one read, orbax's restore returns while other reads are pending; their callbacks
# then find orbax's event loop closed and Python reports that as an unraisable exception. Harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["state manifest", "state metadata", "meta", "state removed"])
def test_a_damaged_checkpoint_raises_workdir_error_naming_it(tmp_path, states, damage):
    directory = tmp_path / "ckpt"
    with Checkpointer(str(directory)) as checkpointer:
        checkpointer.save(1, states, {})
        checkpointer.save(2, states, {})
    step_dir = directory / "2"
    if damage == "state manifest":
        (step_dir / "state" / "manifest.ocdbt").write_bytes(b"garbage")
    elif damage == "state metadata":
        (step_dir / "state" / "_METADATA").write_text("{not json")
    elif damage == "meta":
        (step_dir / "meta" / "metadata").write_text("{not json")
    else:
        for root, _dirs, files in os.walk(step_dir / "state", topdown=False):
            for name in files:
                os.remove(os.path.join(root, name))
            os.rmdir(root)
    with Checkpointer(str(directory)) as checkpointer:
        with pytest.raises(WorkdirError) as raised:
            checkpointer.restore(states)
        message = str(raised.value)
        assert message.startswith(f"checkpoint {step_dir} cannot be read (")
        assert message.endswith("; delete it to restart that part of the run from step 1") and "\n" not in message
        assert checkpointer.restore(states, step=1)[1] == {}  # the older step still serves


def test_a_checkpoint_of_other_arrays_is_refused(tmp_path, states):
    with Checkpointer(str(tmp_path)) as checkpointer:
        checkpointer.save(1, states, {})
        wider = states.replace(
            params={"dense": {**states.params["dense"], "bias": np.zeros((NUM_MODELS, 4), np.float32)}}
        )
        with pytest.raises(
            WorkdirError,
            match=r"params\.dense\.bias: float32\[3, 3\] on disk, float32\[3, 4\] "
            r"expected\); use a new --workdir",
        ):
            checkpointer.restore(wider)
        with pytest.raises(WorkdirError, match=r"step: int32\[3\] on disk, float32\[3\] expected"):
            checkpointer.restore(states.replace(step=np.zeros((NUM_MODELS,), np.float32)))
        with pytest.raises(WorkdirError, match=r"key: on disk, not in this run's state"):
            checkpointer.restore({"step": states.step, "params": states.params, "opt_state": states.opt_state})


def test_save_and_restore_check_their_arguments(tmp_path, states):
    checkpointer = Checkpointer(str(tmp_path))
    with pytest.raises(WorkdirError, match="holds no checkpoint"):
        checkpointer.restore(states)
    checkpointer.save(3, states, {})
    with pytest.raises(ValueError, match="cannot save step 3 .* already holds step 3"):
        checkpointer.save(3, states, {})
    with pytest.raises(ValueError, match="does not survive JSON"):
        checkpointer.save(4, states, {"pair": (1, 2)})
    with pytest.raises(ValueError, match="cannot be written as JSON"):
        checkpointer.save(4, states, {"loss": float("nan")})
    with pytest.raises(TypeError, match=r"state\['x'\] is a float32"):
        checkpointer.save(4, {"x": np.float32(1.0)}, {})
    with pytest.raises(TypeError, match="step must be an int"):
        checkpointer.save(True, states, {})
    with pytest.raises(TypeError, match="meta must be a dict"):
        checkpointer.save(4, states, [])
    assert checkpointer.latest_step() == 3  # nothing of the refused saves was written
    checkpointer.close()
    checkpointer.close()
    with pytest.raises(RuntimeError, match="closed"):
        checkpointer.latest_step()
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(str(tmp_path), max_to_keep=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(WorkdirError, match="is a file"):
        Checkpointer(str(tmp_path / "file"))


def test_orbax_info_logs_are_dropped(tmp_path, states, caplog):
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        with caplog.at_level(logging.INFO, logger="absl"), Checkpointer(str(tmp_path)) as checkpointer:
            checkpointer.save(1, states, {})
            checkpointer.restore(states)
    finally:
        absl_logging.set_verbosity(verbosity)
    assert not [r for r in caplog.records if "orbax" in r.pathname and r.levelno < logging.WARNING]


# ------------------------------------------------------------------------------ echo-jax 0.1 msgpack files


def write_legacy(path, states, step, seconds, identity=None, test=None, extra=None):
    """A checkpoint exactly as echo-jax 0.1's training wrote it."""
    payload = {"states": serialization.to_state_dict(states), "step": step, "seconds": seconds}
    if identity is not None:
        payload["identity"] = json.dumps(identity)
    if test is not None:
        payload["test"], payload["extra"] = json.dumps(test), json.dumps(extra)
    write_atomic(str(path), serialization.msgpack_serialize(payload))


def test_reads_legacy_msgpack_checkpoints(tmp_path, states):
    template = jax.tree.map(np.zeros_like, states)
    path = tmp_path / "checkpoint.msgpack"
    write_legacy(path, states, 40, 3.5, identity=META["identity"])
    restored, meta = read_msgpack_checkpoint(str(path), template)
    assert_bit_equal(restored, states)
    assert meta == {"step": 40, "seconds": 3.5, "identity": META["identity"]}

    write_legacy(path, states, 80, 7.0, identity=META["identity"], test=META["test"], extra=META["extra"])
    _, meta = read_msgpack_checkpoint(str(path), template)
    assert meta == {
        "step": 80,
        "seconds": 7.0,
        "identity": META["identity"],
        "test": META["test"],
        "extra": META["extra"],
    }

    write_legacy(path, states, 8, 1.0)  # the oldest files named no models
    _, meta = read_msgpack_checkpoint(str(path), template)
    assert meta == {"step": 8, "seconds": 1.0}


def test_a_damaged_legacy_file_raises_workdir_error(tmp_path, states):
    path = tmp_path / "checkpoint-1.msgpack"
    write_legacy(path, states, 40, 3.5, identity=META["identity"])
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WorkdirError) as raised:
        read_msgpack_checkpoint(str(path), states)
    assert re.fullmatch(
        rf"checkpoint {re.escape(str(path))} cannot be read \(\w+: .*\); delete it to restart that "
        r"part of the run from its beginning",
        str(raised.value),
    )
    write_legacy(path, jax.tree.map(lambda x: np.concatenate([x, x]), states), 40, 3.5)
    with pytest.raises(
        WorkdirError,
        match=r"does not hold this run's state \(key: uint32\[6, 2\] on disk, "
        r"uint32\[3, 2\] expected\); use a new --workdir",
    ):
        read_msgpack_checkpoint(str(path), states)


def test_a_legacy_file_is_converted_once_into_an_orbax_checkpoint_of_its_step(tmp_path, states):
    path = tmp_path / "checkpoint.msgpack"
    write_legacy(path, states, 40, 3.5, identity=META["identity"])
    with Checkpointer(str(tmp_path / "checkpoints")) as checkpointer:
        assert convert_msgpack_checkpoint(str(path), checkpointer, jax.tree.map(np.zeros_like, states)) == 40
        assert not path.exists() and checkpointer.latest_step() == 40
        restored, meta = checkpointer.restore(jax.tree.map(np.zeros_like, states))
    assert_bit_equal(restored, states)
    assert meta == {"step": 40, "seconds": 3.5, "identity": META["identity"]}


def test_a_damaged_legacy_file_is_left_as_it_was(tmp_path, states):
    path = tmp_path / "checkpoint.msgpack"
    path.write_bytes(b"\x00garbage")
    with Checkpointer(str(tmp_path / "checkpoints")) as checkpointer:
        with pytest.raises(WorkdirError, match="cannot be read"):
            convert_msgpack_checkpoint(str(path), checkpointer, states)
        assert checkpointer.latest_step() is None
    assert path.read_bytes() == b"\x00garbage"


def test_replace_writes_the_latest_step_again_and_only_the_latest(tmp_path, states):
    with Checkpointer(str(tmp_path / "ckpt")) as checkpointer:
        checkpointer.save(3, states, {"step": 3})
        checkpointer.save(5, states, {"step": 5})
        with pytest.raises(ValueError, match="already holds step 5"):
            checkpointer.save(5, states, {"step": 5, "test": 1})
        checkpointer.save(5, states, {"step": 5, "test": 1}, replace=True)
        assert checkpointer.restore(states)[1] == {"step": 5, "test": 1}
        with pytest.raises(ValueError, match="already holds step 5"):
            checkpointer.save(3, states, {}, replace=True)  # not the latest: a resumed run never goes back
        assert sorted(os.listdir(tmp_path / "ckpt")) == ["3", "5"]


class _Killed(BaseException):
    """Stands for the process being killed: no `except Exception` runs."""


def test_a_replacing_save_killed_midway_leaves_the_step_as_it_was(tmp_path, states, monkeypatch):
    # With one checkpoint kept, deleting the step before its successor is written would lose the whole run.
    with Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1) as checkpointer:
        checkpointer.save(5, states, {"step": 5})

        def killed(*args, **kwargs):
            raise _Killed

        monkeypatch.setattr(ocp.CheckpointManager, "save", killed)
        with pytest.raises(_Killed):
            checkpointer.save(5, None, META, replace=True)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["5.replaced"]
    with Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1) as reopened:
        assert sorted(os.listdir(tmp_path / "ckpt")) == ["5"]
        restored, meta = reopened.restore(states)
        assert_bit_equal(restored, states)
        assert meta == {"step": 5}
        reopened.save(5, None, META, replace=True)  # the finished record, as the resumed run writes it
        assert reopened.meta() == META
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["5"]


def test_a_replacing_save_that_fails_puts_the_step_back_at_once(tmp_path, states, monkeypatch):
    with Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1) as checkpointer:
        checkpointer.save(5, states, {"step": 5})

        def full_disk(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
        with pytest.raises(DiskFullError, match="nothing finished was overwritten"):
            checkpointer.save(5, None, META, replace=True)
        monkeypatch.undo()
        assert sorted(os.listdir(tmp_path / "ckpt")) == ["5"]
        assert checkpointer.latest_step() == 5
        assert checkpointer.restore(states)[1] == {"step": 5}


def test_a_replaced_step_left_aside_beside_its_successor_is_deleted(tmp_path, states):
    # Killed after the new step was in place, before the old one was deleted: the new one stands.
    with Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1) as checkpointer:
        checkpointer.save(5, states, {"step": 5})
        shutil.copytree(tmp_path / "ckpt" / "5", tmp_path / "old")
        checkpointer.save(5, None, META, replace=True)
    shutil.move(tmp_path / "old", tmp_path / "ckpt" / "5.replaced")
    with Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1) as reopened:
        assert sorted(os.listdir(tmp_path / "ckpt")) == ["5"]
        assert reopened.meta() == META


def test_a_step_saved_without_a_state_holds_its_meta_alone(tmp_path, states):
    # What a finished run keeps: its results, not the arrays it would resume from.
    with Checkpointer(str(tmp_path / "ckpt")) as checkpointer:
        checkpointer.save(3, states, {"step": 3})
        checkpointer.save(5, states, {"step": 5})
        checkpointer.save(5, None, META, replace=True)
        assert checkpointer.meta() == checkpointer.meta(5) == META
        assert checkpointer.meta(3) == {"step": 3}  # without the arrays' checksum, which `restore` checks
        with pytest.raises(WorkdirError, match=r"ckpt/5 cannot be read .*no 'state' item.* from step 3"):
            checkpointer.restore(states)
        assert checkpointer.restore(states, step=3)[1] == {"step": 3}
    assert sorted(os.listdir(tmp_path / "ckpt" / "5")) == sorted(set(os.listdir(tmp_path / "ckpt" / "3")) - {"state"})
    with Checkpointer(str(tmp_path / "ckpt")) as reopened:
        assert reopened.meta() == META
        with pytest.raises(WorkdirError, match="holds no step 4"):
            reopened.meta(4)
