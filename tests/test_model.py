"""The autoencoder's loss terms: rate estimators, the IWAE bound, VampPrior init, the TC discriminator."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from echo_jax import defaults, echo_clip, steps
from echo_jax import model as model_lib
from tests.helpers import tiny

X = (jax.random.uniform(jax.random.PRNGKey(0), (16, 28, 28, 1)) > 0.6).astype(jnp.float32)


def _model(**overrides):
    config = tiny(defaults.rate_distortion_config(True), **overrides)
    model = steps.make_model(config, (28, 28, 1))
    params = model.init({"params": jax.random.PRNGKey(1), "noise": jax.random.PRNGKey(2)}, X)["params"]
    return config, model, params


def _terms(model, params, key):
    return model.apply({"params": params}, X, rngs={"noise": key})


def test_echo_rate_is_exact_formula_of_the_scale_head():
    _, model, params = _model(encoder="echo", marginal="none")
    features = model.apply({"params": params}, X, method=lambda m, x: m.trunk(x))
    log_s = jax.nn.log_sigmoid(features @ params["head"]["log_s"]["kernel"] + params["head"]["log_s"]["bias"])
    expected = -np.sum(np.log(echo_clip(15)) + np.asarray(log_s), axis=1)  # c solved for K = B - 1 = 15
    np.testing.assert_allclose(_terms(model, params, jax.random.PRNGKey(3)).rate, expected, rtol=1e-5)


@pytest.mark.parametrize("marginal", ["std_normal", "maf", "vamp"])
def test_gaussian_rate_is_an_unbiased_kl_estimate(marginal):
    # E_z[log q(z|x) - log p(z)] over many noise draws equals the rate used in training (analytic KL for
    # the standard normal, -H(q) - log p(z) otherwise): both estimate KL(q(z|x) || p(z)).
    _, model, params = _model(encoder="gaussian", marginal=marginal)
    keys = jax.random.split(jax.random.PRNGKey(4), 2000)
    terms = jax.vmap(lambda k: _terms(model, params, k))(keys)
    monte_carlo = np.mean(np.asarray(terms.log_q - terms.log_p), axis=0)
    used = np.mean(np.asarray(terms.rate), axis=0)
    spread = np.std(np.asarray(terms.log_q - terms.log_p), axis=0) / np.sqrt(len(keys))
    assert np.all(np.abs(monte_carlo - used) < 5 * spread + 1e-3)


@pytest.mark.parametrize("encoder, marginal", [("gaussian", "std_normal"), ("iaf", "std_normal"), ("iaf", "vamp")])
def test_iwae_bound_is_tighter_than_the_elbo(encoder, marginal):
    config, model, params = _model(encoder=encoder, marginal=marginal)
    eval_step = jax.jit(steps.make_eval_step(model, iwae_samples=64))
    sums = [eval_step(params, X, jax.random.PRNGKey(i), 1.0) for i in range(4)]
    neg_elbo = np.mean([s["neg_elbo"] for s in sums])
    iwae = np.mean([s["iwae_nll"] for s in sums])
    assert iwae < neg_elbo  # -log p(x) <= IWAE_64 <= -ELBO (Burda et al. 2016)


def test_vamp_pseudo_inputs_start_at_the_data_mean():
    _, _, params = _model(encoder="gaussian", marginal="vamp")
    mean_image = X.mean(axis=0)
    params = model_lib.init_vamp_pseudo_inputs(params, mean_image)
    assert params["pseudo_inputs"].shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(params["pseudo_inputs"][2], mean_image)


def test_loss_is_distortion_plus_beta_rate_plus_penalties():
    output = model_lib.ModelOutput(
        rate=jnp.array([1.0, 3.0]),
        distortion=jnp.array([10.0, 20.0]),
        mmd=jnp.array(0.5),
        tc=jnp.array(0.25),
        discriminator_loss=jnp.array(0.7),
    )
    loss, means = model_lib.loss(output, jnp.float32(2.0), mmd_weight=999.0, tc_weight=4.0)
    assert float(loss) == pytest.approx(15 + 2 * 2 + 999 * 0.5 + 4 * 0.25)
    assert float(means["neg_elbo"]) == pytest.approx(17.0)
    assert float(means["discriminator_loss"]) == pytest.approx(0.7)


def test_tc_discriminator_gradients_are_kept_apart():
    # The discriminator learns only from its own loss; the encoder gets the TC penalty but not the
    # discriminator's loss. Compare the train step's update with the two gradients computed separately.
    _, model, params = _model(encoder="gaussian", marginal="std_normal", tc_weight=5.0)
    optimizer = optax.sgd(1.0)
    state = steps.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), key=jax.random.PRNGKey(5)
    )
    new_state, metrics = steps.make_train_step(model, optimizer)(state, X, jnp.float32(1.0))
    key = jax.random.fold_in(state.key, 0)
    model_loss = lambda p: model_lib.loss(_terms(model, p, key), 1.0, tc_weight=5.0)[0]
    disc_loss = lambda p: _terms(model, p, key).discriminator_loss
    g_model, g_disc = jax.grad(model_loss)(params), jax.grad(disc_loss)(params)
    expected = jax.tree.map(lambda p, g: p - g, params, {**g_model, "discriminator": g_disc["discriminator"]})
    for got, want in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert all(
        float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves({k: v for k, v in g_disc.items() if k != "discriminator"})
    )
    assert "tc" in metrics and "discriminator_loss" in metrics


def test_encoder_marginal_pairs_are_checked():
    with pytest.raises(ValueError, match="marginal='none'"):
        model_lib.check_encoder_marginal("echo", "std_normal")
    with pytest.raises(ValueError, match="config.model.encoder = .vq. is not one of the choices"):
        model_lib.check_encoder_marginal("vq", "none")
