"""Bad input through the command lines: one line naming the problem, exit status 1, nothing written.

Every case runs the real CLI in a subprocess (all cases at once, two at a time, in a module fixture);
each test then checks one case's exit status, its one-line message and that no config.json was written.
"""

import concurrent.futures
import os
import subprocess
import sys

import pytest

from echo_jax import defaults, validation
from echo_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RD = ["-m", "experiments.rate_distortion", "--config", "configs/rate_distortion/echo.py:quick"]
VAE = ["-m", "experiments.rate_distortion", "--config", "configs/rate_distortion/vae.py:quick"]
DIS = ["-m", "experiments.disentanglement", "--config", "configs/disentanglement/echo.py:quick"]

# (case id, arguments after `python`, a fragment the one-line message must contain). A "{workdir}" in
# the arguments is the case's own work directory; RD and DIS cases get --workdir added.
CASES = [
    (
        "missing_config_file",
        ["-m", "experiments.rate_distortion", "--config", "configs/nope.py"],
        "configs/nope.py not found",
    ),
    ("unknown_field", RD + ["--config.nonexistent=3"], "unknown config field 'nonexistent'"),
    ("unknown_variant", RD[:-1] + ["configs/rate_distortion/echo.py:bogus"], "unknown config variant 'bogus'"),
    ("wrong_type", RD + ["--config.num_epochs=abc"], "--config.num_epochs=abc"),
    ("unknown_flag", RD + ["--bogus=1"], "bogus"),
    ("dataset", RD + ["--config.dataset=nope"], "config.dataset = 'nope'"),
    ("binarize", RD + ["--config.binarize=sometimes"], "config.binarize"),
    ("num_train_examples", RD + ["--config.num_train_examples=-1"], "config.num_train_examples = -1"),
    ("num_test_examples", RD + ["--config.num_test_examples=-5"], "config.num_test_examples = -5"),
    ("network", RD + ["--config.model.network=resnet"], "config.model.network = 'resnet'"),
    ("network_image_size", RD + ["--config.model.network=dsprites"], "config.model.network = 'dsprites'"),
    ("conv_on_dsprites", DIS + ["--config.model.network=conv"], "config.model.network = 'conv'"),
    ("mlp_hidden", RD + ["--config.model.mlp_hidden=(0,)"], "config.model.mlp_hidden"),
    ("latent_dim", RD + ["--config.model.latent_dim=0"], "config.model.latent_dim = 0"),
    ("encoder", RD + ["--config.model.encoder=vq"], "config.model.encoder = 'vq'"),
    ("encoder_marginal", RD + ["--config.model.marginal=maf"], "config.model.marginal = 'maf'"),
    ("echo_activation", RD + ["--config.model.echo_activation=relu"], "config.model.echo_activation"),
    ("echo_fx_bound", RD + ["--config.model.echo_fx_bound=0"], "config.model.echo_fx_bound"),
    ("echo_clip_above", RD + ["--config.model.echo_clip=1.5"], "config.model.echo_clip = 1.5"),
    ("echo_clip_negative", RD + ["--config.model.echo_clip=-0.1"], "config.model.echo_clip = -0.1"),
    ("echo_order", RD + ["--config.model.echo_order=random"], "config.model.echo_order"),
    ("flow_steps", VAE + ["--config.model.flow_steps=0"], "config.model.flow_steps = 0"),
    ("flow_hidden", VAE + ["--config.model.flow_hidden=(0,)"], "config.model.flow_hidden"),
    ("vamp_components", VAE + ["--config.model.vamp_components=0"], "config.model.vamp_components = 0"),
    ("mmd_weight", VAE + ["--config.model.mmd_weight=-1"], "config.model.mmd_weight = -1"),
    ("mmd_bandwidth", VAE + ["--config.model.mmd_bandwidth=-0.5"], "config.model.mmd_bandwidth = -0.5"),
    ("tc_weight", RD + ["--config.model.tc_weight=-1"], "config.model.tc_weight = -1"),
    (
        "discriminator_learning_rate",
        RD + ["--config.discriminator_learning_rate=0"],
        "config.discriminator_learning_rate",
    ),
    ("beta_negative", RD + ["--config.beta=-1"], "config.beta = -1"),
    ("beta_nan", RD + ["--config.beta=nan"], "config.beta = nan"),
    ("betas_not_numbers", RD + ["--config.betas=1,x"], "config.betas = '1,x'"),
    ("betas_negative", RD + ["--config.betas=1,-2"], "config.betas = -2"),
    ("num_seeds", RD + ["--config.num_seeds=0"], "config.num_seeds = 0"),
    ("seed", RD + ["--config.seed=-1"], "config.seed = -1"),
    ("data_seed", RD + ["--config.data_seed=-3"], "config.data_seed = -3"),
    ("batch_size_one", RD + ["--config.batch_size=1"], "config.batch_size = 1"),
    ("batch_size_above_split", RD + ["--config.batch_size=20000"], "batch_size 20000 is larger than the train split"),
    ("num_epochs", RD + ["--config.num_epochs=0"], "config.num_epochs = 0"),
    ("num_train_steps", RD + ["--config.num_train_steps=-5"], "config.num_train_steps = -5"),
    ("learning_rate_zero", RD + ["--config.learning_rate=0"], "config.learning_rate = 0"),
    ("learning_rate_negative", RD + ["--config.learning_rate=-0.001"], "config.learning_rate = -0.001"),
    ("learning_rate_inf", RD + ["--config.learning_rate=inf"], "config.learning_rate = inf"),
    ("lr_schedule", RD + ["--config.lr_schedule=cosine"], "config.lr_schedule = 'cosine'"),
    ("adam_eps", RD + ["--config.adam_eps=0"], "config.adam_eps = 0"),
    ("eval_every_epochs", RD + ["--config.eval_every_epochs=0"], "config.eval_every_epochs = 0"),
    ("iwae_samples", RD + ["--config.iwae_samples=-1"], "config.iwae_samples = -1"),
    ("log_every_steps", RD + ["--config.log_every_steps=0"], "config.log_every_steps = 0"),
    ("checkpoint_every_steps", RD + ["--config.checkpoint_every_steps=-1"], "config.checkpoint_every_steps = -1"),
    ("sweep_strategy", RD + ["--config.sweep_strategy=pmap"], "config.sweep_strategy = 'pmap'"),
    ("models_per_program", RD + ["--config.models_per_program=-1"], "config.models_per_program = -1"),
    ("experiment", RD + ["--config.experiment=other"], "config.experiment = 'other'"),
    ("data_loop", RD + ["--config.data_loop=gpu"], "config.data_loop = 'gpu'"),
    ("steps_per_call", RD + ["--config.steps_per_call=0"], "config.steps_per_call = 0"),
    ("data_source", RD + ["--config.data_source=hub"], "config.data_source = 'hub'"),
    (
        "disentanglement_dataset",
        DIS + ["--config.dataset=mnist_sample", "--config.model.network=mlp"],
        "config.dataset = 'mnist_sample'",
    ),
    ("representation", DIS + ["--config.representation=mode"], "config.representation = 'mode'"),
    ("mig_points", DIS + ["--config.mig_points=0"], "config.mig_points = 0"),
    ("metrics", DIS + ["--config.metrics=mig,mgi"], "config.metrics = 'mig,mgi': 'mgi' is not a metric"),
    (
        "campaign_missing",
        ["-m", "experiments.campaign", "--campaign", "configs/campaigns/nope.py", "--status"],
        "nope.py not found",
    ),
    (
        "campaign_group",
        ["-m", "experiments.campaign", "--campaign", "configs/campaigns/paper_mlp.py", "--status", "--group", "Z"],
        "unknown group(s) Z",
    ),
    (
        "campaign_beta",
        ["-m", "experiments.campaign", "--campaign", "configs/campaigns/paper_mlp.py", "--status", "--beta", "3"],
        "unknown beta(s) 3; the group(s)",
    ),
    ("report_workdir", ["-m", "experiments.report", "--workdir", "{workdir}"], "results.json not found"),
    ("report_nothing", ["-m", "experiments.report"], "give either --workdir"),
]


# The modules a command imports only once its input is known to be right: each takes a second or more to import.
HEAVY = ("jax", "flax", "optax", "orbax.checkpoint", "distrax", "scipy")
# Runs `python -m MODULE ARGS` as -m does (sys.argv[1:] = MODULE ARGS) and prints at exit which of HEAVY it imported.
PROBE = f"""
import atexit, runpy, sys
heavy = {HEAVY!r}
atexit.register(lambda: print("imported:", *[m for m in heavy if m in sys.modules], file=sys.stderr))
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _run(case, root, probe=False):
    name, args, _ = case
    workdir = os.path.join(root, name)
    args = [a.replace("{workdir}", workdir) for a in args]
    if args[:2] in (["-m", "experiments.rate_distortion"], ["-m", "experiments.disentanglement"]):
        args += ["--workdir", workdir]
    if probe:
        args = ["-c", PROBE, *args[1:]]
    env = {k: v for k, v in os.environ.items() if k != "ECHO_JAX_TRACEBACK"}
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    return out, workdir


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cli"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {case[0]: pool.submit(_run, case, root) for case in CASES}
    return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("field", sorted(defaults.CHOICES))
def test_every_field_with_declared_choices_refuses_another_value_naming_them(field):
    # In process, from the declarations themselves: a field given choices is checked against exactly those.
    config = defaults.disentanglement_config() if field == "representation" else defaults.rate_distortion_config()
    group, _, name = field.rpartition(".")
    (config[group] if group else config)[name] = "bogus"
    with pytest.raises(ConfigError) as refused:
        validation.validate_config(config)
    assert str(refused.value) == (
        f"config.{field} = 'bogus' is not one of the choices; use one of {', '.join(defaults.CHOICES[field])}"
    )
    for value in defaults.CHOICES[field]:  # and every declared value is accepted (as far as this field goes)
        (config[group] if group else config)[name] = value
        try:
            validation.validate_config(config)
        except ConfigError as e:
            assert f"config.{field} = {value!r} is not one of" not in str(e)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_line(case, outcomes):
    name, _, fragment = case
    out, workdir = outcomes[name]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1, out.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    assert fragment in lines[0]
    assert "Traceback" not in out.stderr + out.stdout
    assert not os.path.exists(os.path.join(workdir, "config.json"))


@pytest.mark.parametrize("name", ["beta_negative", "mig_points", "metrics", "campaign_group", "report_workdir"])
def test_bad_input_fails_before_the_model_and_jax_are_imported(name, tmp_path):
    # One case of each command: checking what the user asked for needs none of HEAVY, so the error comes at once.
    case = next(c for c in CASES if c[0] == name)
    out, _ = _run(case, str(tmp_path), probe=True)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and lines[0].startswith("error: ") and case[2] in lines[0], out.stderr[-3000:]
    assert lines[-1] == "imported:", f"{name}: {lines[-1]}"


def test_traceback_on_request(tmp_path):
    env = {**os.environ, "ECHO_JAX_TRACEBACK": "1"}
    out = subprocess.run(
        [sys.executable, *RD, "--config.model.latent_dim=0", "--workdir", str(tmp_path / "w")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 1 and "Traceback" in out.stderr and "ConfigError" in out.stderr
