"""Training end to end on tiny shapes: every config runs, resume equivalence, errors before work starts."""

import glob
import json
import os
import re
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from echo_jax import checkpoints, defaults, echo_clip, steps, train, trained
from echo_jax import workdir as workdir_lib
from tests.helpers import load_config, tiny

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs", "rate_distortion")
CONFIG_FILES = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py")))


def test_the_eleven_original_variants_are_there():
    names = {os.path.basename(p)[:-3] for p in CONFIG_FILES}
    assert names == {
        "echo",
        "echo_tanh64",
        "echo_linear",
        "vae",
        "info_vae",
        "vae_maf",
        "vae_vamp",
        "iaf_prior",
        "iaf_prior_mmd",
        "iaf_maf",
        "iaf_vamp",
    }


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.basename(p)[:-3])
def test_every_config_runs_and_writes_results(path, tmp_path):
    full, quick = load_config(path), load_config(path, "quick")
    assert full.model.network == "conv" and full.num_epochs == 200 and full.batch_size == 100
    assert quick.dataset == "mnist_sample" and quick.model.network == "mlp"
    config = tiny(quick)
    results = train.train_and_evaluate(config, str(tmp_path))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == results
    (row,) = results["results"]
    assert row["encoder"] == config.model.encoder and row["marginal"] == config.model.marginal and row["steps"] == 4
    test = row["test"]
    assert test["neg_elbo"] == pytest.approx(test["rate"] + test["distortion"], rel=1e-5)
    assert 0 < test["distortion"] < 784 * np.log(2) * 2 and np.isfinite(test["rate"])
    if config.model.encoder == "echo":  # the exact rate has a floor of D * (-log c)
        assert test["rate"] >= config.model.latent_dim * -np.log(echo_clip(config.batch_size - 1)) - 1e-4
    else:
        assert "iwae_nll" in test
        mi = row["diagnostics"]["mutual_information"]  # the flow bound runs for every encoder and marginal
        assert np.isfinite(mi["flow_kl_lower_bound"]) and mi["flow_kl_lower_bound_stderr"] > 0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {line["split"] for line in lines} == {"train", "test"}
    assert json.loads((tmp_path / "config.json").read_text())["model"]["encoder"] == config.model.encoder


class Killed(Exception):
    """Stands for the run being killed."""


def kill_at_step_5(step):
    if step == 5:
        raise Killed


@pytest.mark.parametrize("encoder, marginal", [("echo", "none"), ("gaussian", "vamp")])
def test_resume_after_a_kill_gives_the_same_numbers(encoder, marginal, tmp_path):
    config = tiny(
        defaults.rate_distortion_config(quick=True),
        encoder=encoder,
        marginal=marginal,
        num_epochs=2,
        checkpoint_every_steps=3,
    )
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))

    with pytest.raises(Killed):
        train.train_and_evaluate(config, str(tmp_path / "b"), on_step=kill_at_step_5)
    assert not (tmp_path / "b" / "results.json").exists()
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))  # resumes from step 3
    strip = lambda r: [{k: v for k, v in row.items() if k != "seconds"} for row in r["results"]]
    assert strip(resumed) == strip(uninterrupted)


def test_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path):
    config = tiny(
        defaults.rate_distortion_config(quick=True),
        encoder="gaussian",
        marginal="std_normal",
        learning_rate=1e12,
        lr_schedule="constant",
        num_epochs=3,
        checkpoint_every_steps=1,
        log_every_steps=1,
    )
    with pytest.raises(FloatingPointError, match=r"non-finite.*the last good checkpoint \(step [1-9]\d*\) is kept"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "results.json").exists()
    import orbax.checkpoint as ocp

    (kept,) = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()][-1:]
    restored = ocp.StandardCheckpointer().restore(kept / "state")
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(restored["params"]))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dataset": "mnits"}, "config.dataset = 'mnits'"),
        ({"encoder": "flow"}, "config.model.encoder = 'flow'"),
        ({"encoder": "gaussian", "marginal": "gamma"}, "config.model.marginal = 'gamma'"),
        ({"encoder": "gaussian", "marginal": "none"}, "need a marginal"),
        ({"beta": -1.0}, "config.beta = -1.0: must be >= 0"),
        ({"betas": "1,-0.5"}, "config.betas = -0.5: must be >= 0"),
        ({"betas": "1,x"}, "comma-separated"),
        ({"batch_size": 1}, "at least 2"),
        ({"batch_size": 40}, "larger than the test split"),
        ({"lr_schedule": "cosine"}, "config.lr_schedule = 'cosine'"),
        ({"checkpoints_to_keep": 0}, "config.checkpoints_to_keep = 0: must be an integer >= 1"),
    ],
)
def test_bad_config_fails_before_any_work(overrides, message, tmp_path):
    config = tiny(defaults.rate_distortion_config(quick=True), **overrides)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=re.escape(message)):
        train.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()


def test_model_fields_outside_config_model_are_refused(tmp_path):
    from echo_jax import validation

    config = tiny(defaults.rate_distortion_config(quick=True))
    config.latent_dim = 8  # a config file written for echo-jax 0.1
    with pytest.raises(ValueError, match=r"config.latent_dim is a field of the model: set config.model.latent_dim"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    del config.model
    with pytest.raises(ValueError, match=r"no model group \(it sets latent_dim at the top level\)"):
        validation.validate_config(config)
    assert not (tmp_path / "run").exists()


def test_workdir_of_another_experiment_is_refused(tmp_path):
    first = tiny(defaults.rate_distortion_config(quick=True))
    workdir_lib.prepare(first, str(tmp_path))
    other = tiny(defaults.rate_distortion_config(quick=True), encoder="gaussian", marginal="std_normal")
    with pytest.raises(ValueError, match="holds another run.*encoder"):
        train.train_and_evaluate(other, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["config.json", "lock"]


def test_beta_0_then_beta_1_on_one_workdir_is_refused_not_answered_with_beta_0s_numbers(tmp_path):
    # beta 0 is a value, not "unset": the default beta (1) is another run.
    zero = tiny(defaults.rate_distortion_config(quick=True), beta=0.0, num_train_steps=3, iwae_samples=0)
    first = train.train_and_evaluate(zero, str(tmp_path))
    assert first["results"][0]["beta"] == 0.0
    one = tiny(defaults.rate_distortion_config(quick=True), beta=1.0, num_train_steps=3, iwae_samples=0)
    with pytest.raises(ValueError, match=r"holds another run \(its config differs in: beta\)"):
        train.train_and_evaluate(one, str(tmp_path))
    assert train.train_and_evaluate(zero, str(tmp_path)) == first  # the same command still answers


@pytest.mark.parametrize("seed, same_run", [(0, True), (3, False)])
def test_data_seed_0_and_an_unset_data_seed_are_one_run_only_when_the_seed_is_0(seed, same_run, tmp_path):
    unset = tiny(defaults.rate_distortion_config(quick=True), seed=seed)
    workdir_lib.prepare(unset, str(tmp_path))  # unset: the data stream of `seed`
    explicit = tiny(defaults.rate_distortion_config(quick=True), seed=seed, data_seed=0)
    if same_run:
        assert workdir_lib.check(explicit, str(tmp_path)) is None
    else:
        with pytest.raises(ValueError, match=r"differs in: data_seed\)"):
            workdir_lib.check(explicit, str(tmp_path))


@pytest.mark.parametrize(
    "schedule, epoch, expected",
    [
        # The original alemi_lr_sched as coded (spec 2.4): 3e-4 up to epoch 100, 3e-6 at 101, climbing back.
        ("as_coded", 100, 3e-4),
        ("as_coded", 101, 3e-6),
        ("as_coded", 150, 1.5e-4),
        ("as_coded", 199, 2.97e-4),
        # The intended linear decay to 0 over epochs 100-200.
        ("linear_decay", 100, 3e-4),
        ("linear_decay", 150, 1.5e-4),
        ("linear_decay", 199, 3e-6),
        ("constant", 199, 3e-4),
    ],
)
def test_learning_rate_schedules(schedule, epoch, expected):
    config = defaults.rate_distortion_config()
    config.lr_schedule = schedule
    lr = steps.learning_rate_schedule(config, steps_per_epoch=500)
    assert float(lr(jnp.asarray(epoch * 500 + 7))) == pytest.approx(expected, rel=1e-4)


def test_a_workdir_written_before_a_field_existed_resumes_at_the_fields_declared_earlier_value(tmp_path, monkeypatch):
    from echo_jax import identity

    config = tiny(defaults.rate_distortion_config(quick=True))
    workdir_lib.prepare(config, str(tmp_path))
    written = json.loads((tmp_path / "config.json").read_text())
    del written["discriminator_learning_rate"]  # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(written))
    with pytest.raises(ValueError, match="differs in: discriminator_learning_rate"):
        workdir_lib.check(config, str(tmp_path))  # nothing says what the earlier run computed
    monkeypatch.setitem(identity.ADDED_FIELDS, "discriminator_learning_rate", 1e-4)
    assert workdir_lib.check(config, str(tmp_path)) is None
    config.discriminator_learning_rate = 1e-3
    with pytest.raises(ValueError, match="differs in: discriminator_learning_rate"):
        workdir_lib.check(config, str(tmp_path))


def test_a_run_resumes_under_other_execution_fields_to_the_same_numbers(tmp_path):
    # How a run is executed (log and checkpoint intervals, where the data is read from) may change on resume.
    config = tiny(defaults.rate_distortion_config(quick=True), num_epochs=2, checkpoint_every_steps=3)
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
    with pytest.raises(Killed):
        train.train_and_evaluate(config, str(tmp_path / "b"), on_step=kill_at_step_5)
    changed = tiny(
        defaults.rate_distortion_config(quick=True), num_epochs=2, checkpoint_every_steps=2, log_every_steps=1
    )
    resumed = train.train_and_evaluate(changed, str(tmp_path / "b"))
    strip = lambda r: [{k: v for k, v in row.items() if k != "seconds"} for row in r["results"]]
    assert strip(resumed) == strip(uninterrupted)


def test_a_v01_workdir_resumes_to_the_same_numbers(tmp_path):
    # echo-jax 0.1 wrote a flat config.json ("unset" as 0) and one msgpack checkpoint; such a run resumes.
    from flax import serialization

    config = tiny(defaults.rate_distortion_config(quick=True), num_epochs=2, checkpoint_every_steps=3)
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
    with pytest.raises(Killed):
        train.train_and_evaluate(config, str(tmp_path / "b"), on_step=kill_at_step_5)
    old = tmp_path / "b"
    written = json.loads((old / "config.json").read_text())
    model = written.pop("model")
    written.update({k: 0.0 if v is None else v for k, v in model.items()}, binarize="")
    (old / "config.json").write_text(json.dumps(written))
    train_set, _ = train.load_datasets(config)
    model, optimizer = steps.make_model(config, train_set.image_shape), steps.make_optimizer(config, 4)
    sample = jnp.zeros((16, *train_set.image_shape))
    init = jax.vmap(lambda key: steps.create_train_state(model, optimizer, key, sample, sample[0]))
    template = jax.eval_shape(init, jax.ShapeDtypeStruct((1, 2), jnp.uint32))
    with checkpoints.Checkpointer(old / "checkpoints") as saved:
        states, _ = saved.restore(template, 3)
    payload = {
        "states": serialization.to_state_dict(states),
        "step": 3,
        "seconds": 1.0,
        "identity": json.dumps({"runs": [[1.0, 0]], "chunk": 0, "chunk_size": 1, "num_models": 1}),
    }
    (old / "checkpoint.msgpack").write_bytes(serialization.msgpack_serialize(payload))
    shutil.rmtree(old / "checkpoints")
    resumed = train.train_and_evaluate(config, str(old))
    strip = lambda r: [{k: v for k, v in row.items() if k != "seconds"} for row in r["results"]]
    assert strip(resumed) == strip(uninterrupted)
    assert not (old / "checkpoint.msgpack").exists()  # converted once into an orbax checkpoint of its step
    assert resumed["provenance"]["commits"][0] is None  # the 0.1 part recorded no commit


# ----------------------------------------------------------------------------------------------- interrupts


def signal_at(number, step):
    def send(update):
        if update == step:
            os.kill(os.getpid(), number)

    return send


def test_sigint_saves_a_checkpoint_where_the_run_is_and_the_resumed_run_ends_with_the_same_numbers(tmp_path):
    config = tiny(
        defaults.rate_distortion_config(quick=True), num_epochs=2, checkpoint_every_steps=3, checkpoints_to_keep=2
    )
    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(train.RunInterrupted) as stopped:
        train.train_and_evaluate(config, str(tmp_path / "b"), on_step=signal_at(signal.SIGINT, 5))
    assert str(stopped.value) == "stopped at step 5 of 8; checkpoint saved; run the same command to resume"
    assert stopped.value.exit_status == 130 and signal.getsignal(signal.SIGINT) is before
    assert sorted(int(p.name) for p in (tmp_path / "b" / "checkpoints").iterdir() if p.name.isdigit()) == [3, 5]
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    strip = lambda r: [{k: v for k, v in row.items() if k != "seconds"} for row in r["results"]]
    assert strip(resumed) == strip(uninterrupted)
    records = lambda d: (d / "metrics.jsonl").read_text().splitlines()
    assert len(records(tmp_path / "b")) == len(records(tmp_path / "a"))


def test_sigterm_in_the_final_evaluation_stops_there_and_the_resumed_run_evaluates_again(tmp_path):
    config = tiny(defaults.rate_distortion_config(quick=True), encoder="gaussian", marginal="std_normal")
    calls = []

    def evaluator(model, params, test_set):
        calls.append(1)
        if len(calls) == 2:  # the first run's evaluation: stopped by SIGTERM (a job scheduler's stop)
            os.kill(os.getpid(), signal.SIGTERM)
        return {"value": 1.0}

    uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"), evaluators={"extra": evaluator})
    with pytest.raises(train.RunInterrupted, match=r"stopped at step 4 of 4 \(in the final evaluation\)") as stopped:
        train.train_and_evaluate(config, str(tmp_path / "b"), evaluators={"extra": evaluator})
    assert stopped.value.exit_status == 143 and not (tmp_path / "b" / "results.json").exists()
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"), evaluators={"extra": evaluator})
    strip = lambda r: [{k: v for k, v in row.items() if k != "seconds"} for row in r["results"]]
    assert strip(resumed) == strip(uninterrupted)
    # The interrupted evaluation logged nothing: the log is the uninterrupted run's, line for line.
    log = lambda d: [(r["split"], r["step"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
    assert log(tmp_path / "b") == log(tmp_path / "a")


# ----------------------------------------------------------------------------------------------- safety


def strict_json(text):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_divergence_before_any_checkpoint_says_none_exists(tmp_path):
    config = tiny(
        defaults.rate_distortion_config(quick=True),
        encoder="gaussian",
        marginal="std_normal",
        learning_rate=1e12,
        lr_schedule="constant",
        num_epochs=2,
        log_every_steps=1,
    )
    with pytest.raises(FloatingPointError, match="no checkpoint was written before that") as raised:
        train.train_and_evaluate(config, str(tmp_path))
    assert "new --workdir" in str(raised.value) and "last good checkpoint" not in str(raised.value)
    assert not list(tmp_path.glob("checkpoint*")) and not (tmp_path / "results.json").exists()
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        strict_json(line)


def test_results_and_logs_are_strict_json(tmp_path):
    from echo_jax.files import dumps_strict

    train.train_and_evaluate(tiny(defaults.rate_distortion_config(quick=True)), str(tmp_path))
    strict_json((tmp_path / "results.json").read_text())
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
    with pytest.raises(ValueError):
        dumps_strict({"rate": float("nan")})


def test_non_finite_evaluation_stops_the_run(tmp_path, monkeypatch):
    from echo_jax.errors import DivergedError

    monkeypatch.setattr(train, "evaluate", lambda *args: [{"rate": 1.0}, {"rate": float("inf")}])
    config = tiny(defaults.rate_distortion_config(quick=True), betas="1,2", seed=1)
    with pytest.raises(
        DivergedError, match=r"test evaluation at step 4 is non-finite for \(beta, seed\) \[\(2.0, 1\)\]"
    ):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "results.json").exists()


def _chunked(**overrides):
    return tiny(defaults.rate_distortion_config(quick=True), betas="0.5,2", iwae_samples=0, num_epochs=2, **overrides)


def test_chunk_layout_is_decided_once_and_reused_when_free_memory_changes(tmp_path, monkeypatch):
    from echo_jax import sweep

    fits = {"n": 1}
    monkeypatch.setattr(sweep, "models_per_program", lambda *a, **k: fits["n"])
    reference = train.train_and_evaluate(_chunked(), str(tmp_path / "a"))
    steps = iter(range(10**6))
    with pytest.raises(train.RunInterrupted):
        train.train_and_evaluate(_chunked(), str(tmp_path / "b"), should_stop=lambda: next(steps) >= 5)
    layout = json.loads((tmp_path / "b" / "layout.json").read_text())
    assert (layout["runs"], layout["chunk_size"]) == ([[0.5, 0], [2.0, 0]], 1)
    fits["n"] = 2  # more free memory now: a fresh decision would put both models in one program
    resumed = train.train_and_evaluate(_chunked(), str(tmp_path / "b"))
    strip = lambda r: [{k: v for k, v in row.items() if k != "seconds"} for row in r["results"]]
    assert strip(resumed) == strip(reference)


def test_a_finished_population_keeps_its_results_and_no_training_state(tmp_path):
    # Its checkpoint only tells a resumed run that it is finished: the parameters are in models/.
    reference = train.train_and_evaluate(_chunked(models_per_program=1), str(tmp_path / "a"))
    calls = iter(range(10**6))
    with pytest.raises(train.RunInterrupted, match="stopped at step 0 of 8"):  # as the second population starts
        train.train_and_evaluate(
            _chunked(models_per_program=1), str(tmp_path / "b"), should_stop=lambda: next(calls) >= 8
        )
    finished = tmp_path / "b" / "checkpoints-0"
    assert sorted(p.name for p in finished.iterdir()) == ["8"]  # checkpoints_to_keep = 1
    assert (finished / "8" / "meta").is_dir() and not (finished / "8" / "state").exists()
    resumed = train.train_and_evaluate(_chunked(models_per_program=1), str(tmp_path / "b"))
    strip = lambda r: [{k: v for k, v in row.items() if k != "seconds"} for row in r["results"]]
    assert strip(resumed) == strip(reference)
    model = trained.load_run(str(tmp_path / "b"), beta=0.5, seed=0)
    assert model.info["test"] == reference["results"][0]["test"]


def test_a_checkpoint_of_other_models_is_refused(tmp_path):
    config = _chunked(models_per_program=1)
    steps = iter(range(10**6))
    with pytest.raises(train.RunInterrupted):
        train.train_and_evaluate(config, str(tmp_path), should_stop=lambda: next(steps) >= 5)
    shutil.copytree(tmp_path / "checkpoints-0", tmp_path / "checkpoints-1")
    with pytest.raises(ValueError, match=r"checkpoints-1 holds other models than this run's"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "results.json").exists()


def test_run_files_without_config_json_or_a_damaged_checkpoint_are_refused(tmp_path):
    config = tiny(defaults.rate_distortion_config(quick=True), num_epochs=2)
    steps = iter(range(10**6))
    with pytest.raises(train.RunInterrupted):
        train.train_and_evaluate(config, str(tmp_path), should_stop=lambda: next(steps) >= 5)
    for meta in (tmp_path / "checkpoints").glob("*/meta/*"):
        meta.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoints/\d+ cannot be read"):
        train.train_and_evaluate(config, str(tmp_path))
    shutil.rmtree(tmp_path / "checkpoints")  # an echo-jax 0.1 checkpoint, damaged
    (tmp_path / "checkpoint.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint.msgpack cannot be read"):
        train.train_and_evaluate(config, str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="holds run files but no config.json"):
        train.train_and_evaluate(config, str(tmp_path))


def test_resume_removes_stale_temporary_files_and_trims_the_log(tmp_path):
    config = tiny(
        defaults.rate_distortion_config(quick=True), num_epochs=2, checkpoint_every_steps=3, log_every_steps=1
    )
    train.train_and_evaluate(config, str(tmp_path / "a"))

    with pytest.raises(Killed):
        train.train_and_evaluate(config, str(tmp_path / "b"), on_step=kill_at_step_5)
    (tmp_path / "b" / ".tmp-abandoned-checkpoint.msgpack").write_bytes(b"half")
    train.train_and_evaluate(config, str(tmp_path / "b"))  # resumes at step 3: steps 4 and 5 are logged again
    assert not list((tmp_path / "b").glob(".tmp-*"))
    records = lambda d: [
        (r["split"], r["step"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
    ]
    assert records(tmp_path / "b") == records(tmp_path / "a")


def test_a_finished_workdir_answers_without_the_data(tmp_path, monkeypatch):
    config = tiny(defaults.rate_distortion_config(quick=True))
    first = train.train_and_evaluate(config, str(tmp_path))

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(train.data_lib, "load", no_data)
    assert train.train_and_evaluate(config, str(tmp_path)) == first
