"""Tests for echo_jax.marginals against scipy densities, Monte-Carlo estimates and analytic moments."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special, stats

from echo_jax.flows import AutoregressiveFlow
from echo_jax.marginals import (
    ORIGINAL_IAF_PRIOR_MMD_BANDWIDTH,
    MAFMarginal,
    default_mmd_bandwidth,
    diag_gaussian_log_prob,
    gaussian_entropy,
    gaussian_kl_to_std_normal,
    mmd,
    std_normal_log_prob,
    vamp_log_prob,
)

RNG_SEED = 0
# Jitted once per module: one compile is cheaper than dispatching many eager ops.
jit_std_normal_log_prob = jax.jit(std_normal_log_prob)
jit_diag_gaussian_log_prob = jax.jit(diag_gaussian_log_prob)
jit_gaussian_entropy = jax.jit(gaussian_entropy)
jit_gaussian_kl_to_std_normal = jax.jit(gaussian_kl_to_std_normal)
jit_vamp_log_prob = jax.jit(vamp_log_prob, static_argnames="as_coded")
jit_mmd = jax.jit(mmd)
MEAN = np.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
LOG_VAR = np.array([[-1.0, 0.5, 0.0], [0.2, -2.0, 1.0]])


def as_f32(x):
    return jnp.asarray(x, jnp.float32)


def perturb(params, seed, scale):
    """Adds N(0, scale^2) noise to every parameter, so that zero-initialised log-scales move."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: as_f32(leaf + scale * rng.standard_normal(leaf.shape)), params)


def scipy_diag_log_prob(z, mean, log_var):
    return stats.norm(loc=mean, scale=np.exp(0.5 * log_var)).logpdf(z).sum(-1)


# ---------------------------------------------------------------- Gaussian densities and KL


def test_gaussian_log_probs_and_entropy_match_scipy():
    rng = np.random.default_rng(RNG_SEED)
    z = rng.standard_normal((4, 2, 3)) * 2.0
    np.testing.assert_allclose(jit_std_normal_log_prob(as_f32(z)), stats.norm.logpdf(z).sum(-1), rtol=1e-6)
    np.testing.assert_allclose(
        jit_diag_gaussian_log_prob(as_f32(z), as_f32(MEAN), as_f32(LOG_VAR)),
        scipy_diag_log_prob(z, MEAN, LOG_VAR),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        jit_gaussian_entropy(as_f32(LOG_VAR)), stats.norm(scale=np.exp(0.5 * LOG_VAR)).entropy().sum(-1), rtol=1e-6
    )


def test_analytic_kl_matches_hand_values_and_a_monte_carlo_estimate():
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension; KL(N(0, e^-1) || N(0, 1)) = e^-1 / 2.
    np.testing.assert_allclose(jit_gaussian_kl_to_std_normal(jnp.ones(3), jnp.zeros(3)), 1.5, rtol=1e-6)
    np.testing.assert_allclose(
        jit_gaussian_kl_to_std_normal(jnp.zeros(1), -jnp.ones(1)), 0.5 * math.exp(-1.0), rtol=1e-6
    )

    num_samples = 200_000
    rng = np.random.default_rng(RNG_SEED + 1)
    z = MEAN + np.exp(0.5 * LOG_VAR) * rng.standard_normal((num_samples,) + MEAN.shape)
    log_ratio = scipy_diag_log_prob(z, MEAN, LOG_VAR) - stats.norm.logpdf(z).sum(-1)
    monte_carlo = log_ratio.mean(0)
    standard_error = log_ratio.std(0) / math.sqrt(num_samples)
    analytic = np.asarray(jit_gaussian_kl_to_std_normal(as_f32(MEAN), as_f32(LOG_VAR)))
    assert np.all(np.abs(analytic - monte_carlo) < 4.0 * standard_error), (analytic, monte_carlo)
    # The one-sample MC rate built from this module's densities is the same estimator.
    module_ratio = np.asarray(
        jit_diag_gaussian_log_prob(as_f32(z), as_f32(MEAN), as_f32(LOG_VAR)) - jit_std_normal_log_prob(as_f32(z))
    )
    np.testing.assert_allclose(module_ratio.mean(0), monte_carlo, atol=1e-4)


# ---------------------------------------------------------------- MMD

MMD_BATCH = 100
MMD_DIM = 8
MMD_TRIALS = 200
batched_mmd = jax.jit(jax.vmap(mmd))


def expected_mmd_under_shift(shift_norm, batch, dim, bandwidth):
    """E of the V-statistic for q = N(delta, I), p = N(0, I), Gaussian kernel, by hand.

    For d ~ N(m, s^2 I_D): E exp(-a ||d||^2) = (1 + 2 a s^2)^(-D/2) exp(-a ||m||^2 / (1 + 2 a s^2)),
    here with a = 1 / (2 bw^2) and s^2 = 2. Diagonal terms of K_qq and K_pp contribute 1 / B each.
    """
    a = 1.0 / (2.0 * bandwidth**2)
    factor = 1.0 + 4.0 * a
    same = factor ** (-dim / 2.0)
    cross = same * math.exp(-a * shift_norm**2 / factor)
    return 2.0 / batch + 2.0 * (1.0 - 1.0 / batch) * same - 2.0 * cross


def test_default_mmd_bandwidth_is_the_info_vae_one():
    assert default_mmd_bandwidth(32) == pytest.approx(32 / math.sqrt(2.0))
    assert 2.0 * default_mmd_bandwidth(7) ** 2 == pytest.approx(49.0)


def test_mmd_matches_a_numpy_v_statistic():
    key = jax.random.key(3)
    z = as_f32(np.random.default_rng(RNG_SEED + 2).standard_normal((MMD_BATCH, MMD_DIM)) + 0.3)
    prior = np.asarray(jax.random.normal(key, z.shape, z.dtype), np.float64)  # mmd's documented draw
    q = np.asarray(z, np.float64)
    np.testing.assert_allclose(jit_mmd(key, z), numpy_mmd(q, prior, default_mmd_bandwidth(MMD_DIM)), atol=2e-6)
    np.testing.assert_allclose(jit_mmd(key, z, bandwidth=1.0), numpy_mmd(q, prior, 1.0), atol=2e-6)


def numpy_mmd(q, prior, bandwidth):
    """The biased V-statistic with a Gaussian kernel, written out in float64 numpy."""

    def kernel_mean(x, y):
        squared = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
        return np.exp(-squared / (2.0 * bandwidth**2)).mean()

    return kernel_mean(q, q) + kernel_mean(prior, prior) - 2.0 * kernel_mean(q, prior)


def test_mmd_is_null_for_the_prior_and_grows_monotonically_with_a_mean_shift():
    rng = np.random.default_rng(RNG_SEED + 3)
    base = rng.standard_normal((MMD_TRIALS, MMD_BATCH, MMD_DIM))
    keys = jax.random.split(jax.random.key(4), MMD_TRIALS)
    direction = np.ones(MMD_DIM) / math.sqrt(MMD_DIM)
    bandwidth = default_mmd_bandwidth(MMD_DIM)
    means = []
    for shift in (0.0, 0.5, 1.0, 2.0, 4.0):
        values = np.asarray(batched_mmd(keys, as_f32(base + shift * direction)), np.float64)
        expected = expected_mmd_under_shift(shift, MMD_BATCH, MMD_DIM, bandwidth)
        standard_error = values.std() / math.sqrt(MMD_TRIALS)
        # Sampling noise only: the trial mean agrees with the analytic expectation within 4 SE.
        assert abs(values.mean() - expected) < 4.0 * standard_error, (shift, values.mean(), expected)
        means.append(values.mean())
        if shift == 0.0:
            # Same distribution: ~0 up to the V-statistic's 2/B (1 - E k) bias, ~0.004 here.
            null_mean, null_spread = values.mean(), values.std()
            assert null_mean < 2.0 / MMD_BATCH
    assert np.all(np.diff(means) > 0), means
    assert means[2] > null_mean + 3.0 * null_spread  # a unit shift stands out of one batch's noise


def test_mmd_with_the_original_iaf_prior_mmd_bandwidth_is_inert():
    z = as_f32(np.random.default_rng(RNG_SEED + 4).standard_normal((MMD_BATCH, MMD_DIM)))
    key = jax.random.key(5)
    value, grad = jax.jit(jax.value_and_grad(lambda v: mmd(key, v, bandwidth=ORIGINAL_IAF_PRIOR_MMD_BANDWIDTH)))(z)
    np.testing.assert_allclose(value, 2.0 / MMD_BATCH, rtol=1e-6)
    assert np.max(np.abs(np.asarray(grad))) < 1e-12


def test_mmd_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \(B, D\)"):
        mmd(jax.random.key(0), jnp.zeros(5))
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        mmd(jax.random.key(0), jnp.zeros((2, 3)), bandwidth=0.0)


# ---------------------------------------------------------------- VampPrior


def test_vamp_log_prob_matches_a_direct_scipy_logsumexp_and_mean():
    rng = np.random.default_rng(RNG_SEED + 5)
    num_points, num_components, dim = 6, 4, 3
    z = rng.standard_normal((num_points, dim)) * 2.0
    z[0] += 40.0  # far from every component: the logsumexp must stay finite and exact
    means = rng.standard_normal((num_components, dim))
    log_vars = 0.5 * rng.standard_normal((num_components, dim))
    component = np.stack(
        [scipy_diag_log_prob(z, means[k], log_vars[k]) for k in range(num_components)], axis=1
    )  # (B, K)
    true_mixture = special.logsumexp(component, axis=1) - math.log(num_components)
    as_coded = component.mean(1)

    result = jit_vamp_log_prob(as_f32(z), as_f32(means), as_f32(log_vars))
    result_as_coded = jit_vamp_log_prob(as_f32(z), as_f32(means), as_f32(log_vars), as_coded=True)
    assert result.shape == result_as_coded.shape == (num_points,)
    np.testing.assert_allclose(result, true_mixture, rtol=1e-5)
    np.testing.assert_allclose(result_as_coded, as_coded, rtol=1e-5)
    assert np.all(np.asarray(result_as_coded) <= np.asarray(result))  # Jensen
    # One component: the mixture is that Gaussian.
    single = jit_vamp_log_prob(as_f32(z), as_f32(means[:1]), as_f32(log_vars[:1]))
    np.testing.assert_allclose(single, component[:, 0], rtol=1e-5)


def test_vamp_log_prob_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same D"):
        vamp_log_prob(jnp.zeros((2, 3)), jnp.zeros((4, 2)), jnp.zeros((4, 2)))


# ---------------------------------------------------------------- MAF marginal

MAF_DIM = 2
MAF_HIDDEN = (16, 16)


@pytest.fixture(scope="module")
def affine_maf():
    marginal = MAFMarginal(num_steps=2, hidden_sizes=MAF_HIDDEN, affine=True)
    params = marginal.init(jax.random.key(6), jnp.zeros((1, MAF_DIM)))
    params = perturb(params, RNG_SEED + 6, 0.15)
    log_prob = jax.jit(lambda z: marginal.apply(params, z, method="log_prob"))
    return marginal, params, log_prob


def test_maf_marginal_density_integrates_to_one_and_matches_its_samples(affine_maf):
    marginal, params, log_prob = affine_maf
    step = 0.04
    axis = np.arange(-12.0, 12.0 + step / 2, step)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, MAF_DIM)
    density = np.exp(np.asarray(log_prob(as_f32(grid)), np.float64))
    mass = density.sum() * step**2
    np.testing.assert_allclose(mass, 1.0, atol=2e-3)
    # The border carries no mass, so the grid holds the whole distribution.
    on_border = (np.abs(grid) > 11.5).any(-1)
    assert density[on_border].sum() * step**2 < 1e-5

    grid_mean = (grid * density[:, None]).sum(0) * step**2 / mass
    num_samples = 20_000
    samples = np.asarray(marginal.apply(params, jax.random.key(7), num_samples, MAF_DIM, method="sample"), np.float64)
    assert samples.shape == (num_samples, MAF_DIM)
    standard_error = samples.std(0) / math.sqrt(num_samples)
    assert np.all(np.abs(samples.mean(0) - grid_mean) < 4.0 * standard_error), (samples.mean(0), grid_mean)
    assert np.max(np.abs(grid_mean)) > 0.1  # the marginal is not the base N(0, I)


def test_maf_marginal_log_prob_is_the_change_of_variables(affine_maf):
    marginal, params, log_prob = affine_maf
    z = as_f32(np.random.default_rng(RNG_SEED + 7).standard_normal((8, MAF_DIM)) * 2.0)
    flow_params = {"params": params["params"]["flow"]}
    flow = AutoregressiveFlow(num_steps=marginal.num_steps, hidden_sizes=MAF_HIDDEN, affine=True)
    to_base = jax.jit(lambda v: flow.apply(flow_params, v)[0])
    u = np.asarray(to_base(z), np.float64)
    jacobians = np.asarray(jax.jit(jax.vmap(jax.jacfwd(to_base)))(z), np.float64)
    reference = stats.norm.logpdf(u).sum(-1) + np.linalg.slogdet(jacobians)[1]
    np.testing.assert_allclose(log_prob(z), reference, rtol=1e-5, atol=1e-5)


def test_maf_marginal_fits_a_gaussian_by_maximum_likelihood():
    rng = np.random.default_rng(RNG_SEED + 8)
    data_mean, data_std = np.array([2.0, -1.0]), np.array([2.0, 0.7])
    train_data, held_out = (data_mean + data_std * rng.standard_normal((n, MAF_DIM)) for n in (4000, 5000))
    true_density = stats.norm(data_mean, data_std)

    marginal = MAFMarginal(num_steps=2, hidden_sizes=MAF_HIDDEN, affine=True)
    params = marginal.init(jax.random.key(8), as_f32(train_data))
    optimizer = optax.adam(1e-2)

    def train(params, data):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(lambda p: -jnp.mean(marginal.apply(p, data, method="log_prob")))(params)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), length=600)
        return params, losses

    params, losses = jax.jit(train)(params, as_f32(train_data))
    assert float(losses[0]) > -true_density.logpdf(train_data).sum(-1).mean() + 0.5  # work to do
    # The family holds the truth: in the bulk of held-out data the fitted density matches it
    # pointwise. (Far in the tails a ReLU conditioner extrapolates freely, so those are left out.)
    log_ratio = true_density.logpdf(held_out).sum(-1) - np.asarray(
        marginal.apply(params, as_f32(held_out), method="log_prob"), np.float64
    )
    in_bulk = np.all(np.abs(held_out - data_mean) < 2.5 * data_std, axis=-1)
    assert np.abs(log_ratio[in_bulk]).mean() < 0.05
