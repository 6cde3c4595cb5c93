"""echo_jax.diagnostics against closed forms: a linear-Gaussian encoder of Gaussian data, mixtures by quadrature."""

import jax
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from echo_jax import diagnostics


def _linear_gaussian(n, seed=0):
    """x ~ N(0, diag(var)), q(z|x) = N(a x, s^2): I(X;Z) = sum_j 0.5 log(1 + a_j^2 var_j / s_j^2)."""
    rng = np.random.default_rng(seed)
    var = np.array([1.0, 4.0, 0.25, 1.0])
    a = np.array([1.0, 0.5, 2.0, 0.1])
    s = np.array([0.5, 1.0, 0.3, 1.0])
    x = rng.normal(size=(n, 4)) * np.sqrt(var)
    mean, log_var = a * x, np.broadcast_to(2 * np.log(s), (n, 4))
    mi = 0.5 * np.log1p(a**2 * var / s**2)
    # q(z) = N(0, a^2 var + s^2): its KL to N(0, 1) per dimension.
    q_var = a**2 * var + s**2
    kl_marginal = 0.5 * (q_var - 1 - np.log(q_var))
    return mean, log_var, mi, kl_marginal


def test_kl_rate_minus_the_marginal_kl_bound_is_the_mutual_information_of_a_linear_gaussian_encoder():
    mean, log_var, mi, kl_marginal = _linear_gaussian(200_000)
    rate = diagnostics.gaussian_kl_per_dim(mean, log_var).sum()
    # ELBO surgery: rate = I(X;Z) + KL(q(z) || p(z)); q(z) is Gaussian here, so the bound is tight.
    np.testing.assert_allclose(rate, mi.sum() + kl_marginal.sum(), atol=0.02)
    bound = diagnostics.marginal_kl_lower_bound(mean, log_var)
    np.testing.assert_allclose(bound, kl_marginal.sum(), atol=0.02)
    np.testing.assert_allclose(rate - bound, mi.sum(), atol=0.02)


def test_the_marginal_kl_bound_lies_below_the_kl_of_a_non_gaussian_aggregate_posterior():
    # 1-d: q(z) = 0.5 N(-2, 0.3^2) + 0.5 N(2, 0.3^2); its KL to N(0, 1) by quadrature.
    mean = np.repeat([[-2.0], [2.0]], 5000, axis=0)
    log_var = np.full_like(mean, 2 * np.log(0.3))
    q = lambda z: 0.5 * scipy.stats.norm.pdf(z, -2, 0.3) + 0.5 * scipy.stats.norm.pdf(z, 2, 0.3)
    kl, _ = scipy.integrate.quad(lambda z: q(z) * (np.log(q(z)) - scipy.stats.norm.logpdf(z)), -8, 8, limit=200)
    bound = diagnostics.marginal_kl_lower_bound(mean, log_var)
    assert bound < kl - 0.3  # strictly below: the mixture has much less entropy than its moment-matched Gaussian
    var = 4.0 + 0.09  # the moment-matched Gaussian's variance
    np.testing.assert_allclose(bound, 0.5 * (var - 1 - np.log(var)), rtol=1e-6)


def test_the_sample_kl_bound_agrees_with_the_closed_form_for_a_standard_normal_marginal():
    mean, log_var, _, kl_marginal = _linear_gaussian(200_000, seed=1)
    rng = np.random.default_rng(2)
    z = mean + np.exp(0.5 * log_var) * rng.normal(size=mean.shape)
    log_m = scipy.stats.norm.logpdf(z).sum(axis=1)
    np.testing.assert_allclose(diagnostics.sample_kl_lower_bound(z, log_m), kl_marginal.sum(), atol=0.03)


def _codes(mean, log_var, seed):
    return mean + np.exp(0.5 * log_var) * np.random.default_rng(seed).normal(size=mean.shape)


def test_the_flow_kl_bound_recovers_the_kl_of_a_gaussian_aggregate_posterior():
    fit_mean, fit_log_var, _, kl_marginal = _linear_gaussian(20_000, seed=7)
    mean, log_var, _, _ = _linear_gaussian(20_000, seed=8)
    z = _codes(mean, log_var, 9)
    bound, error = diagnostics.flow_kl_lower_bound(
        fit_mean,
        fit_log_var,
        z,
        scipy.stats.norm.logpdf(z).sum(axis=1),
        key=jax.random.PRNGKey(0),
        steps=1000,
        hidden_sizes=(32, 32),
    )
    # KL(q || N(0, I)) = 0.169 nats (q(z) = N(0, diag(1.25, 2, 1.09, 1.01))); a bound never lies above it by more
    # than its sampling error, and a flow that can represent q (a Gaussian) comes within a few hundredths below it.
    assert kl_marginal.sum() == pytest.approx(0.1688, abs=1e-3)
    assert 0 < error < 0.02
    assert kl_marginal.sum() - 0.03 < bound < kl_marginal.sum() + 3 * error


def test_the_flow_kl_bound_is_tight_where_the_moment_bound_is_not():
    # 2-d: x ~ N(0, 1), q(z|x) = N((x, x^2 - 1), 0.5^2 I). q(z) bends along a parabola, which the moment-matched
    # Gaussian cannot follow and one affine autoregressive step can. KL(q || N(0, I)) by quadrature on a grid.
    s = 0.5

    def posteriors(n, seed):
        x = np.random.default_rng(seed).normal(size=n)
        mean = np.stack([x, x**2 - 1], axis=1)
        return mean, np.full_like(mean, 2 * np.log(s))

    step, xs = 0.05, np.arange(-6, 6, 0.02)
    z1, z2 = np.meshgrid(np.arange(-6, 6, step), np.arange(-4, 22, step), indexing="ij")
    weights = scipy.stats.norm.pdf(xs) * 0.02
    q = np.zeros_like(z1)
    for i in range(0, len(xs), 50):
        x = xs[i : i + 50]
        q += np.einsum(
            "k,ijk->ij",
            weights[i : i + 50],
            scipy.stats.norm.pdf(z1[..., None], x, s) * scipy.stats.norm.pdf(z2[..., None], x**2 - 1, s),
        )
    assert q.sum() * step**2 == pytest.approx(1.0, abs=1e-4)
    where = q > 0
    log_p = scipy.stats.norm.logpdf(z1) + scipy.stats.norm.logpdf(z2)
    kl = np.sum(q[where] * (np.log(q[where]) - log_p[where])) * step**2  # 0.831 nats

    mean, log_var = posteriors(10_000, 3)
    z = _codes(mean, log_var, 4)
    moment = diagnostics.marginal_kl_lower_bound(mean, log_var)  # 0.25 nats
    bound, error = diagnostics.flow_kl_lower_bound(
        *posteriors(40_000, 1),
        z,
        scipy.stats.norm.logpdf(z).sum(axis=1),
        key=jax.random.PRNGKey(1),
        steps=1000,
        hidden_sizes=(32, 32),
    )
    assert moment < kl - 0.5
    assert kl - 0.1 < bound < kl + 3 * error


def test_a_poorly_fitted_flow_still_bounds_the_kl_from_below():
    # No fit at all (0 steps): r is the flow at its initialisation, a density all the same.
    fit_mean, fit_log_var, _, kl_marginal = _linear_gaussian(5000, seed=11)
    mean, log_var, _, _ = _linear_gaussian(20_000, seed=12)
    z = _codes(mean, log_var, 13)
    bound, error = diagnostics.flow_kl_lower_bound(
        fit_mean, fit_log_var, z, scipy.stats.norm.logpdf(z).sum(axis=1), key=jax.random.PRNGKey(2), steps=0
    )
    assert bound < kl_marginal.sum() + 3 * error


def test_heldout_mutual_information_recovers_a_linear_gaussian_encoders_information():
    mean, log_var, mi, _ = _linear_gaussian(4000, seed=3)
    ref_mean, ref_log_var, _, _ = _linear_gaussian(20_000, seed=4)
    estimate = diagnostics.heldout_mutual_information(
        mean, log_var, ref_mean, ref_log_var, key=jax.random.PRNGKey(0), num_samples=4
    )
    # I(X;Z) = 2.40 nats here (0.805 + 0.347 + 1.247 + 0.005); the finite-mixture bias is upward and small
    # at N = 20,000 in 4 dimensions.
    assert mi.sum() == pytest.approx(2.4033, abs=1e-3)
    assert estimate == pytest.approx(mi.sum(), abs=0.03)


def test_heldout_mutual_information_is_not_capped_at_log_n():
    # Nearly noiseless codes of well-separated points carry far more than log N nats.
    rng = np.random.default_rng(5)
    ref_mean = rng.normal(size=(50, 2)) * 10
    mean = rng.normal(size=(200, 2)) * 10
    log_var = np.full((200, 2), 2 * np.log(0.01))
    estimate = diagnostics.heldout_mutual_information(
        mean, log_var, ref_mean, np.full((50, 2), 2 * np.log(0.01)), key=jax.random.PRNGKey(1)
    )
    assert estimate > np.log(50) + 1


def test_echo_rate_per_dim_floor_and_active_units():
    clip = 0.8
    rng = np.random.default_rng(6)
    log_s = np.stack(
        [np.zeros(1000), np.full(1000, -1e-4), np.log(rng.uniform(0.1, 0.5, 1000)), np.full(1000, -0.5)], axis=1
    )
    log_scale = np.log(clip) + log_s
    per_dim = diagnostics.echo_rate_per_dim(log_scale)
    np.testing.assert_allclose(per_dim, -np.log(clip) - log_s.mean(axis=0), rtol=1e-6)
    assert diagnostics.echo_floor(clip) == pytest.approx(0.2231435513)
    assert diagnostics.dims_at_floor(per_dim, clip) == 2  # the first two dimensions carry only the floor
    location = np.stack([np.zeros(1000), rng.normal(size=1000) * 0.05, rng.normal(size=1000) * 0.2], axis=1)
    assert diagnostics.active_units(location) == 1  # variances 0, 0.0025, 0.04 against the threshold 0.01
