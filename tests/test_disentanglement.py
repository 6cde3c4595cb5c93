"""The disentanglement experiment end to end on a tiny budget: training, metrics, results.json, the report."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from echo_jax import defaults, disentanglement, identity, train
from echo_jax.errors import ConfigError
from tests.helpers import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_disentanglement(config, **overrides):
    config.num_train_examples = 2_000
    config.num_test_examples = 128
    config.num_train_steps = 6
    config.log_every_steps = 3
    config.mig_points = 320
    config.factor_vae_train = 128
    config.factor_vae_eval = 64
    config.factor_vae_variance_points = 320
    for key, value in overrides.items():
        (config.model if key in config.model else config)[key] = value
    return config


@pytest.mark.parametrize("name", ["echo", "vae"])
def test_configs_match_the_original_protocol(name):
    config = load_config(f"configs/disentanglement/{name}.py")
    assert (config.dataset, config.model.network, config.model.latent_dim, config.batch_size) == (
        "dsprites",
        "dsprites",
        10,
        64,
    )
    assert config.learning_rate == 1e-4 and config.representation == "sample"
    assert config.num_epochs * 11_520 == 299_520  # 26 epochs of 737,280 / 64 steps
    quick = load_config(f"configs/disentanglement/{name}.py", "quick")
    assert (quick.model.network, quick.num_train_steps, quick.num_train_examples) == ("mlp", 1_500, 50_000)
    assert disentanglement.selected_metrics(config) == ("mig", "factor_vae")


def test_metrics_are_chosen_by_name():
    choose = lambda value: disentanglement.selected_metrics({"metrics": value})
    assert choose("") == disentanglement.selected_metrics({}) == ("mig", "factor_vae")
    assert choose("all") == disentanglement.METRICS
    assert choose(" sap, mig ,") == ("mig", "sap")  # METRICS order, spaces and empty names ignored
    assert choose(("dci", "unsupervised")) == ("dci", "unsupervised")
    with pytest.raises(ConfigError, match="'mgi' is not a metric"):
        choose("mig,mgi")


def test_the_metrics_field_left_unset_keeps_the_run_key():
    # Runs keyed before config.metrics existed keep their keys: unset, the field is not part of the identity.
    config = identity.single_run_config(defaults.disentanglement_config(), 1.0, 0)
    without = config.copy_and_resolve_references()
    del without["metrics"]
    assert identity.run_key(config) == identity.run_key(without)
    config.metrics = "all"
    assert identity.run_key(config) != identity.run_key(without)


def test_sweep_with_tc_discriminator_writes_metrics(tmp_path):
    config = tiny_disentanglement(load_config("configs/disentanglement/echo.py", "quick"), betas="1,4", tc_weight=2.0)
    results = train.train_and_evaluate(config, str(tmp_path), evaluators=disentanglement.evaluators(config))
    assert json.loads((tmp_path / "results.json").read_text()) == results
    for row in results["results"]:
        metrics = row["disentanglement"]
        assert 0 <= metrics["mig"] <= 1 and len(metrics["mig_per_factor"]) == 5
        assert 0 <= metrics["factor_vae"] <= 1 and 0 <= metrics["active_dims"] <= 10
        assert "tc" in row["test"] and "discriminator_loss" in row["test"]
        assert row["steps"] == 6


def test_correlated_dsprites_also_scores_the_held_out_combinations(tmp_path):
    config = tiny_disentanglement(
        load_config("configs/disentanglement/vae.py", "quick"), dataset="dsprites_correlated", representation="mean"
    )
    (row,) = train.train_and_evaluate(config, str(tmp_path), evaluators=disentanglement.evaluators(config))["results"]
    metrics = row["disentanglement"]
    assert 0 <= metrics["heldout_mig"] <= 1 and len(metrics["heldout_mig_per_factor"]) == 5
    assert np.isfinite(row["test"]["rate"])


def test_disentanglement_needs_dsprites(tmp_path):
    config = tiny_disentanglement(defaults.disentanglement_config(True), dataset="mnist_sample")
    with pytest.raises(ValueError, match="dsprites"):
        train.train_and_evaluate(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


TINY_FLAGS = [
    "--config.num_train_examples=2000",
    "--config.num_test_examples=128",
    "--config.num_train_steps=4",
    "--config.log_every_steps=2",
    "--config.model.mlp_hidden=(32,)",
    "--config.mig_points=256",
    "--config.factor_vae_train=64",
    "--config.factor_vae_eval=32",
    "--config.factor_vae_variance_points=256",
]


def _cli(tmp_path, *flags):
    return subprocess.run(
        [sys.executable, "-m", "experiments.disentanglement", "--config", "configs/disentanglement/vae.py:quick"]
        + ["--workdir", str(tmp_path / "w"), *TINY_FLAGS, *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "ECHO_JAX_PROGRESS": "0"},
    )


def test_every_metric_end_to_end_through_the_command_line(tmp_path):
    out = _cli(tmp_path, "--config.metrics=all", "--config.dataset=dsprites_correlated")
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = json.loads((tmp_path / "w" / "results.json").read_text())["results"]
    scores = row["disentanglement"]
    columns = [k for m in disentanglement.METRICS for k in disentanglement.SCORES[m]]
    assert set(columns) <= set(scores)
    assert len(scores["mig_per_factor"]) == len(scores["sap_per_factor"]) == 5
    for name in columns:
        assert scores[name] is None or np.isfinite(scores[name]), name
    for name in ("mig", "heldout_mig", "factor_vae", "dci_disentanglement", "dci_completeness", "sap", "modularity"):
        assert 0 <= scores[name] <= 1, name
    # Every score computed is a column of the printed table and of results.md.
    results_md = (tmp_path / "w" / "results.md").read_text()
    for text in (out.stdout, results_md):
        header = next(line for line in text.splitlines() if line.startswith("| method") and "mig" in line)
        assert [c.strip() for c in header.strip("|").split("|")] == ["method", "dataset", "beta", "seed", *columns]
    assert "| rate | distortion | -ELBO |" in results_md  # the rate-distortion table above it


def test_an_unknown_metric_is_one_line_before_anything_is_written(tmp_path):
    out = _cli(tmp_path, "--config.metrics=mig,dci,mgi")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and len(lines) == 1, out.stderr[-3000:]
    assert lines[0].startswith("error: config.metrics = 'mig,dci,mgi': 'mgi' is not a metric")
    assert not (tmp_path / "w").exists()


def test_the_report_shows_only_the_scores_computed(tmp_path):
    rows = [
        {"encoder": "echo", "marginal": "none", "dataset": "dsprites", "beta": b, "seed": 0, "disentanglement": d}
        for b, d in ((1.0, {"mig": 0.25, "mig_per_factor": [0.1] * 5}), (2.0, {"sap": 0.5, "mig": 0.125}))
    ]
    table = disentanglement.markdown_table(rows)
    assert table.splitlines()[0] == "| method | dataset | beta | seed | mig | sap |"
    assert table.splitlines()[2:] == [
        "| echo | dsprites | 1 | 0 | 0.250 |  |",
        "| echo | dsprites | 2 | 0 | 0.125 | 0.500 |",
    ]
    assert disentanglement.markdown_table([{**rows[0], "disentanglement": {}}]) == ""
