"""A run's identity: unset is never 0, execution fields never count, earlier configs keep theirs, and every
committed campaign run is found by the key in its folder name."""

import glob
import json
import os

import ml_collections
import pytest

from echo_jax import campaign, defaults, identity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = sorted(glob.glob(os.path.join(REPO, "results", "**", "config.json"), recursive=True))


def single(**changes):
    config = identity.single_run_config(defaults.rate_distortion_config(quick=True), 1.0, 0)
    campaign._override(config, changes)
    return config


@pytest.mark.parametrize(
    "name, value",
    [
        ("beta", 0.0),  # beta 0 is a beta, not "unset" (the default is 1)
        ("num_train_steps", 40),
        ("learning_rate", 3e-4),
        ("seed", 1),
        ("data_seed", 5),
        ("dataset", "mnist"),
        ("binarize", "static"),
        ("model", {"echo_clip": 0.5}),
        ("model", {"mlp_hidden": (500,)}),
        ("model", {"flow_affine": True}),
        ("model", {"tc_weight": 10.0}),
    ],
)
def test_what_a_run_computes_changes_its_key_and_its_workdir(name, value):
    base, changed = single(), single(**{name: value})
    assert identity.run_key(changed) != identity.run_key(base)
    field = next(iter(value)) if isinstance(value, dict) else name
    held = json.loads(base.to_json_best_effort())
    assert identity.workdir_mismatch(held, changed) == [field]


def test_unset_is_unset_and_zero_is_zero():
    base = defaults.rate_distortion_config(quick=True)
    zero = defaults.rate_distortion_config(quick=True)
    zero.beta, zero.num_train_steps = 0.0, 40
    one = defaults.rate_distortion_config(quick=True)
    one.beta, one.num_train_steps = 1.0, 40
    assert identity.workdir_mismatch(json.loads(zero.to_json_best_effort()), one) == ["beta"]
    assert identity.fields(base)["data_seed"] is None and identity.fields(base)["echo_clip"] is None
    # data_seed 0 and an unset data_seed are one data stream for seed 0 and two for seed 3.
    explicit = defaults.rate_distortion_config(quick=True)
    explicit.data_seed = 0
    assert identity.workdir_mismatch(json.loads(base.to_json_best_effort()), explicit) == []
    base.seed = explicit.seed = 3
    assert identity.workdir_mismatch(json.loads(base.to_json_best_effort()), explicit) == ["data_seed"]
    assert identity.data_seed_of(base) == 3 and identity.data_seed_of(explicit) == 0


def test_equal_values_are_equal_and_types_stay_apart():
    assert identity.run_key(single(beta=1)) == identity.run_key(single(beta=1.0))
    assert identity.run_key(single(model={"mlp_hidden": [500, 500]})) == identity.run_key(single())
    assert identity.differing_fields({"a": True}, {"a": 1.0}) == ["a"]  # True == 1.0 in Python, not here
    assert identity.differing_fields({"a": None}, {}) == ["a"]
    assert identity.differing_fields({"a": ""}, {"a": None}) == ["a"]


@pytest.mark.parametrize(
    "name, value",
    [
        ("log_every_steps", 7),
        ("data_dir", "/elsewhere"),
        ("data_source", "tfds"),
        ("sweep_strategy", "vmap"),
        ("checkpoint_every_steps", 9),
        ("checkpoints_to_keep", 3),
        ("models_per_program", 2),
        ("data_loop", "device"),
        ("steps_per_call", 3),
        ("tensorboard", True),
    ],
)
def test_execution_fields_are_not_part_of_a_run(name, value):
    assert name in defaults.EXECUTION_FIELDS
    changed = single(**{name: value})
    assert identity.run_key(changed) == identity.run_key(single())
    assert identity.workdir_mismatch(json.loads(single().to_json_best_effort()), changed) == []


def test_a_sweeps_composition_is_part_of_its_workdir_not_of_its_runs():
    sweep = single(betas="1,2")
    assert identity.run_key(sweep) == identity.run_key(single())
    assert identity.workdir_mismatch(json.loads(single().to_json_best_effort()), sweep) == ["betas"]


def test_a_flat_v01_config_is_the_same_run():
    # echo-jax 0.1 kept the model's fields at the top level and wrote its unset clip and bandwidth as 0.
    nested = single()
    flat = {k: v for k, v in json.loads(nested.to_json_best_effort()).items() if k != "model"}
    flat.update({k: 0.0 if v is None else v for k, v in nested.model.to_dict().items()})
    assert identity.run_key(flat) == identity.run_key(nested)
    assert identity.workdir_mismatch(flat, nested) == []
    assert identity.fields(flat)["echo_clip"] is None
    with_clip = dict(flat, echo_clip=0.5)
    assert identity.run_key(with_clip) == identity.run_key(single(model={"echo_clip": 0.5}))


def test_a_config_written_before_a_field_existed_is_the_run_at_the_fields_earlier_value(monkeypatch):
    config = defaults.rate_distortion_config(quick=True)
    held = json.loads(config.to_json_best_effort())
    del held["discriminator_learning_rate"]  # as if written before the field existed
    # Not declared as added: nothing says what the old run computed, so it is another run.
    assert identity.workdir_mismatch(held, config) == ["discriminator_learning_rate"]
    monkeypatch.setitem(identity.ADDED_FIELDS, "discriminator_learning_rate", 1e-4)
    assert identity.workdir_mismatch(held, config) == []
    config.discriminator_learning_rate = 1e-3
    assert identity.workdir_mismatch(held, config) == ["discriminator_learning_rate"]


# Every field the configs had when this list was written. A new field is either an execution field
# (defaults.EXECUTION_FIELDS) or changes what runs compute: then identity.ADDED_FIELDS must say which value
# reproduces the runs written before it (or every earlier run's key changes, and their folders need
# `python -m experiments.campaign --migrate-keys`).
KNOWN_FIELDS = {
    "experiment", "dataset", "binarize", "num_train_examples", "num_test_examples", "network", "mlp_hidden",
    "latent_dim", "encoder", "marginal", "echo_activation", "echo_fx_bound", "echo_clip", "echo_order",
    "flow_steps", "flow_hidden", "flow_affine", "vamp_components", "vamp_as_coded", "mmd_weight", "mmd_bandwidth",
    "tc_weight", "beta", "betas", "num_seeds", "seed", "data_seed", "batch_size", "num_epochs", "num_train_steps",
    "learning_rate", "lr_schedule", "adam_eps", "discriminator_learning_rate", "eval_every_epochs", "iwae_samples",
    "representation", "mig_points", "factor_vae_train", "factor_vae_eval", "factor_vae_variance_points",
}  # fmt: skip


def test_every_config_field_is_known_to_identity():
    for config in (defaults.rate_distortion_config(), defaults.disentanglement_config()):
        unknown = set(identity.fields(config)) - KNOWN_FIELDS - defaults.EXECUTION_FIELDS - set(identity.ADDED_FIELDS)
        assert not unknown, f"declare {sorted(unknown)} in identity.ADDED_FIELDS or defaults.EXECUTION_FIELDS"
        for name, earlier in identity.ADDED_FIELDS.items():
            if name in identity.fields(config):  # its default keeps what runs computed before it existed
                assert identity.fields(config)[name] == earlier, name


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: os.path.relpath(os.path.dirname(p), REPO))
def test_every_committed_run_carries_its_configs_key(path):
    directory = os.path.dirname(path)
    key = os.path.basename(directory).rsplit("_", 1)[1]
    with open(path) as f:
        assert identity.run_key(json.load(f)) == key
    with open(os.path.join(directory, "results.json")) as f:
        assert json.load(f)["run"]["key"] == key
    sidecar = os.path.join(directory, "params.json")
    if os.path.exists(sidecar):
        with open(sidecar) as f:
            content = json.load(f)
        assert content["key"] == key == identity.run_key(content["config"])


def test_every_committed_run_is_found_by_the_campaign():
    assert COMMITTED
    paper_mlp = campaign.load_config_file(os.path.join(REPO, "configs", "campaigns", "paper_mlp.py"))
    planned = {run.key: run for run in campaign.plan(paper_mlp, os.path.join(REPO, "configs"))}
    done = campaign.finished_runs(os.path.join(REPO, "results", "paper_mlp"))
    assert len(done) == len(COMMITTED) and set(done) <= set(planned)
    for key, directory in done.items():  # found where the plan puts it
        assert os.path.relpath(directory, os.path.join(REPO, "results", "paper_mlp")) == planned[key].path


def test_fields_refuses_a_name_twice():
    config = ml_collections.ConfigDict({"model": {"seed": 1}, "seed": 0})
    with pytest.raises(ValueError, match="'seed' appears twice"):
        identity.fields(config)
