"""The disentanglement experiment end to end on a tiny budget: training, metrics, results.json."""

import json

import numpy as np
import pytest

from echo_jax import defaults, disentanglement, train
from tests.helpers import load_config


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
    assert load_config(f"configs/disentanglement/{name}.py", "quick").num_train_steps == 3_000


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
