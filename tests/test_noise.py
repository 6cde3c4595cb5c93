"""Echo noise: exactness of the series, the echo property, the exact rate, and jit/vmap/grad safety."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import stats
from sklearn.feature_selection import mutual_info_classif

from echo_jax import echo_clip, echo_rate, echo_sample, linear_clipped, noise, tanh16, tanh64
from echo_jax.noise import other_indices

B, D = 12, 3


def _inputs(seed=0, batch=B, dim=D):
    rng = np.random.default_rng(seed)
    fx = np.tanh(rng.normal(size=(batch, dim))).astype(np.float32)
    log_s = np.log(1 / (1 + np.exp(-rng.normal(1.0, 1.0, size=(batch, dim))))).astype(np.float32)
    return jnp.asarray(fx), jnp.asarray(log_s)


def numpy_echo_series(fx, log_s, clip, orders):
    """Independent reference: the series term by term, with explicit running products, in float64."""
    fx, s = np.asarray(fx, np.float64), clip * np.exp(np.asarray(log_s, np.float64))
    eps = np.zeros_like(fx)
    for i, order in enumerate(np.asarray(orders)):
        prefix = np.ones(fx.shape[1])
        for j in order:
            eps[i] += prefix * fx[j]
            prefix = prefix * s[j]
    return eps, fx + s * eps


# The clip constants the original configs use (spec section 1.3), solved from M c^K / (1 - c) = 2^-23.
@pytest.mark.parametrize("num_terms, fx_bound, expected", [(99, 1.0, 0.8359), (99, 10.0, 0.8175), (64, 1.0, 0.7622)])
def test_echo_clip_matches_original_constants(num_terms, fx_bound, expected):
    c = echo_clip(num_terms, fx_bound)
    assert round(c, 4) == expected
    # The truncation bound holds, and c is the largest value for which it does.
    assert fx_bound * c**num_terms / (1 - c) <= 2**-23 * (1 + 1e-9)
    c_up = c + 1e-6
    assert fx_bound * c_up**num_terms / (1 - c_up) > 2**-23


def test_echo_clip_rejects_bad_input():
    with pytest.raises(ValueError, match="num_terms"):
        echo_clip(0)
    with pytest.raises(ValueError, match="fx_bound"):
        echo_clip(10, fx_bound=-1.0)


def test_truncated_tail_is_below_precision():
    # With every s at its bound c and f at its bound, the K-term series misses less than 2^-23.
    k = 63
    c = echo_clip(k)
    partial = sum(c**m for m in range(k))
    assert 1 / (1 - c) - partial <= 2**-23 * (1 + 1e-6)


def test_activations():
    x = jnp.array([-1e4, -16.0, 0.0, 64.0, 1e4])
    np.testing.assert_allclose(tanh16(x), np.tanh(np.array(x) / 16), rtol=1e-6)
    np.testing.assert_allclose(tanh64(x), np.tanh(np.array(x) / 64), rtol=1e-6)
    np.testing.assert_allclose(linear_clipped(x, 10.0), [-10, -10, 0, 10, 10])


def test_other_indices_are_permutations_of_the_others():
    idx = np.asarray(other_indices(jax.random.PRNGKey(3), 37))
    assert idx.shape == (37, 36)
    for i, row in enumerate(idx):
        assert sorted(row.tolist()) == [j for j in range(37) if j != i]


def test_other_indices_are_uniform():
    # Row 0 of a batch of 5: each of the 4 others equally likely at each position (chi-square, 4000 draws).
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    rows = np.asarray(jax.vmap(lambda k: other_indices(k, 5)[0])(keys))
    for position in range(4):
        counts = np.bincount(rows[:, position], minlength=5)
        assert counts[0] == 0
        assert stats.chisquare(counts[1:]).pvalue > 1e-3
    # Rows are independent: the first entries of rows 1 and 2 (from {0,2,3,4} and {0,1,3,4}) coincide with
    # probability 3 * (1/4)^2 = 3/16, as for independent draws.
    both = np.asarray(jax.vmap(lambda k: other_indices(k, 5)[1:3, 0])(keys))
    same = np.mean(both[:, 0] == both[:, 1])
    assert abs(same - 3 / 16) < 0.025  # sd of the estimate ~ 0.006


def test_replace_draws_from_whole_batch():
    idx = np.asarray(other_indices(jax.random.PRNGKey(1), 8, replace=True))
    assert idx.shape == (8, 7) and idx.min() >= 0 and idx.max() < 8
    assert any(i in row for i, row in enumerate(idx))  # self can appear (56 draws; P(never) ~ 4e-4)


@pytest.mark.parametrize("replace", [False, True])
def test_series_matches_numpy_reference(replace):
    fx, log_s = _inputs()
    c = echo_clip(B - 1)
    key = jax.random.PRNGKey(7)
    orders = other_indices(key, B, replace=replace)
    eps_ref, z_ref = numpy_echo_series(fx, log_s, c, orders)
    z = echo_sample(key, fx, log_s, clip=c, replace=replace)
    eps = echo_sample(key, fx, log_s, clip=c, replace=replace, return_noise=True)
    np.testing.assert_allclose(eps, eps_ref, atol=2e-6)
    np.testing.assert_allclose(z, z_ref, atol=2e-6)


@pytest.mark.parametrize("form", [noise._series_by_horner, noise._series_by_prefix])
def test_each_platform_form_of_the_series_matches_numpy_reference(form):
    # echo_sample runs one form per platform; a CPU run of the suite reaches the other only from here.
    fx, log_s = _inputs(batch=40, dim=5)
    c = echo_clip(39)
    orders = other_indices(jax.random.PRNGKey(3), 40)
    eps_ref, _ = numpy_echo_series(fx, log_s, c, orders)
    eps = jax.jit(form)(orders.T, fx, jnp.log(c) + log_s)
    np.testing.assert_allclose(eps, eps_ref, atol=2e-6)
    check_grads(
        lambda f, s: form(orders.T, jnp.asarray(f), s),
        (fx, jnp.log(c) + log_s),
        order=1,
        modes=["rev"],
        atol=5e-2,
        rtol=5e-2,
    )


def numpy_series_gradients(fx, log_s_clipped, orders, weights):
    """Gradients of sum(weights * eps) by the chain rule, term by term in float64: term k of row i carries
    weight P_ik = prod_{m<k} s_{pi_i(m)}, so it adds w_i P_ik to f's gradient at pi_i(k), and each earlier
    occurrence of an index j in the row puts s_j once into P_ik (d P_ik / d log s_j counts them)."""
    fx, s = np.asarray(fx, np.float64), np.exp(np.asarray(log_s_clipped, np.float64))
    d_fx, d_log_s = np.zeros_like(fx), np.zeros_like(fx)
    for i, order in enumerate(np.asarray(orders)):
        prefix, seen = np.ones(fx.shape[1]), []
        for j in order:
            d_fx[j] += weights[i] * prefix
            for m in seen:
                d_log_s[m] += weights[i] * prefix * fx[j]
            seen.append(j)
            prefix = prefix * s[j]
    return d_fx, d_log_s


@pytest.mark.parametrize("replace", [False, True])
def test_horner_series_hand_written_gradient_matches_numpy_reference(replace):
    # replace=True repeats indices in a row (and includes the row's own), so a step scatters twice into one slab.
    fx, log_s = _inputs(seed=4, batch=30, dim=4)
    log_s_clipped = jnp.log(echo_clip(29)) + log_s
    orders = other_indices(jax.random.PRNGKey(8), 30, replace=replace)
    weights = np.random.default_rng(2).normal(size=(30, 4))
    loss = lambda f, s: jnp.sum(weights * noise._series_by_horner(orders.T, f, s))  # noqa: E731
    d_fx, d_log_s = jax.jit(jax.grad(loss, argnums=(0, 1)))(fx, log_s_clipped)
    ref_fx, ref_log_s = numpy_series_gradients(fx, log_s_clipped, orders, weights)
    np.testing.assert_allclose(d_fx, ref_fx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_log_s, ref_log_s, rtol=1e-5, atol=1e-5)


def test_cyclic_order_matches_numpy_reference():
    fx, log_s = _inputs(batch=13)  # K = 12 = 0b1100 exercises the binary decomposition
    c = echo_clip(12)
    key = jax.random.PRNGKey(5)
    cycle = np.asarray(jax.random.permutation(key, 13))
    position = np.argsort(cycle)
    orders = [[cycle[(position[i] + k) % 13] for k in range(1, 13)] for i in range(13)]
    _, z_ref = numpy_echo_series(fx, log_s, c, orders)
    z = echo_sample(key, fx, log_s, clip=c, order="cyclic")
    np.testing.assert_allclose(z, z_ref, atol=2e-6)


def test_noise_of_example_ignores_itself_and_depends_on_others():
    fx, log_s = _inputs()
    c = echo_clip(B - 1)
    key = jax.random.PRNGKey(11)
    sample = functools.partial(echo_sample, key, clip=c, return_noise=True)
    eps = sample(fx, log_s)
    eps_self = sample(fx.at[4].add(0.5), log_s.at[4].add(-1.0))
    np.testing.assert_array_equal(eps_self[4], eps[4])
    assert np.all(np.abs(np.delete(eps_self - eps, 4, axis=0)).max(axis=1) > 0)
    first_source = int(other_indices(key, B)[4, 0])
    eps_other = sample(fx.at[first_source].add(0.5), log_s)
    np.testing.assert_allclose(eps_other[4] - eps[4], 0.5, atol=1e-6)  # the first term enters with weight 1


def test_keys_determine_the_draw():
    fx, log_s = _inputs()
    c = echo_clip(B - 1)
    z1 = echo_sample(jax.random.PRNGKey(0), fx, log_s, clip=c)
    z2 = echo_sample(jax.random.PRNGKey(0), fx, log_s, clip=c)
    z3 = echo_sample(jax.random.PRNGKey(1), fx, log_s, clip=c)
    np.testing.assert_array_equal(z1, z2)
    assert np.abs(np.asarray(z1) - np.asarray(z3)).max() > 1e-3


def _echo_property_samples(order):
    # A non-Gaussian encoder: x uniform on [-2, 2] (bimodal after tanh), scales depending on x.
    batch, c = 64, echo_clip(63)

    @jax.jit
    def draw(key):
        kx, ke = jax.random.split(key)
        x = jax.random.uniform(kx, (batch, 1), minval=-2.0, maxval=2.0)
        fx, log_s = jnp.tanh(3.0 * x), jax.nn.log_sigmoid(2.0 * x + 1.0)
        z = echo_sample(ke, fx, log_s, clip=c, order=order)
        eps = echo_sample(ke, fx, log_s, clip=c, order=order, return_noise=True)
        return z[:, 0], eps[:, 0]

    z, eps = jax.vmap(draw)(jax.random.split(jax.random.PRNGKey(0), 300))
    # One example per batch for eps (its draws share terms within a batch), all for z's partner batch.
    return np.asarray(z[:150]).ravel(), np.asarray(eps[150:]).ravel()


@pytest.mark.parametrize("order", ["independent", "cyclic"])
def test_echo_property_z_and_eps_have_the_same_law(order):
    z, eps = _echo_property_samples(order)
    # Two-sample KS test on 9,600 draws each from disjoint batches; the law is far from Gaussian.
    assert stats.ks_2samp(z, eps).pvalue > 0.01
    assert stats.normaltest(eps).pvalue < 1e-6


def test_echo_property_detects_a_wrong_channel():
    # The same test rejects z built without the echo scaling (z = f + eps): the check has power.
    z, eps = _echo_property_samples("independent")
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=z.size)
    assert stats.ks_2samp(np.tanh(3 * x) + rng.permutation(eps), eps).pvalue < 1e-6


def test_rate_formula_matches_independent_mi_estimate():
    # 1-D latent, X takes 4 values: I(X;Z) = -E log(c s(X)) exactly. Estimate I(X;Z) from 20,000 channel
    # samples with the Kraskov-style kNN estimator of scikit-learn (Ross 2014), independent of our code.
    batch, c = 100, echo_clip(99)
    f_vals = jnp.array([-0.6, -0.1, 0.3, 0.7])
    log_s_vals = jax.nn.log_sigmoid(jnp.array([2.0, 0.5, -0.5, 1.0]))
    probs = jnp.array([0.1, 0.2, 0.3, 0.4])
    rate = float(jnp.sum(probs * echo_rate(log_s_vals[:, None], clip=c)))

    @jax.jit
    def draw(key):
        kx, ke = jax.random.split(key)
        x = jax.random.choice(kx, 4, (batch,), p=probs)
        return x, echo_sample(ke, f_vals[x][:, None], log_s_vals[x][:, None], clip=c)[:, 0]

    xs, zs = jax.vmap(draw)(jax.random.split(jax.random.PRNGKey(0), 200))
    estimate = mutual_info_classif(
        np.asarray(zs).reshape(-1, 1), np.asarray(xs).ravel(), discrete_features=False, random_state=0
    )[0]
    assert rate == pytest.approx(0.7043, abs=1e-3)  # -sum p (log c + log sigmoid a), by hand
    assert abs(estimate - rate) < 0.03  # the rate without the clip term would be 0.18 nats lower


def test_echo_rate_formula_and_floor():
    log_s = jnp.zeros((2, 32))  # sigmoid -> 1: the floor D * (-log c), 5.736 nats for the original's c
    np.testing.assert_allclose(echo_rate(log_s, clip=0.8359), [5.736, 5.736], atol=1e-3)
    log_s = jnp.log(jnp.full((1, 2), 0.5))
    np.testing.assert_allclose(echo_rate(log_s, clip=0.5), [4 * np.log(2)], rtol=1e-6)


def test_gradients_reach_every_example():
    fx, log_s = _inputs()
    c = echo_clip(B - 1)
    key = jax.random.PRNGKey(2)
    # z_0 depends on f of every example, and on s of every example but the last one in its order.
    grad_f, grad_s = jax.grad(lambda f, s: echo_sample(key, f, s, clip=c)[0].sum(), argnums=(0, 1))(fx, log_s)
    last = int(other_indices(key, B)[0, -1])
    assert np.all(np.abs(np.asarray(grad_f)).sum(axis=1) > 0)
    assert np.all(np.abs(np.delete(np.asarray(grad_s), last, axis=0)).sum(axis=1) > 0)
    assert np.all(np.asarray(grad_s)[last] == 0)
    for order in ["independent", "cyclic"]:
        check_grads(
            lambda f, s, order=order: echo_sample(key, f, s, clip=c, order=order),
            (fx, log_s),
            order=1,
            modes=["rev"],
            atol=5e-2,
            rtol=5e-2,
        )


def test_jit_and_vmap_over_models_agree_with_single_calls():
    # Three models' batches at once (a leading "beta" axis), each with its own key.
    fx, log_s = _inputs()
    stacked_fx = jnp.stack([fx, fx * 0.5, -fx])
    stacked_s = jnp.stack([log_s, log_s - 0.3, log_s])
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    c = echo_clip(B - 1)
    batched = jax.jit(jax.vmap(lambda k, f, s: echo_sample(k, f, s, clip=c)))(keys, stacked_fx, stacked_s)
    for m in range(3):
        np.testing.assert_allclose(batched[m], echo_sample(keys[m], stacked_fx[m], stacked_s[m], clip=c), atol=1e-6)
    # The clip may be traced too (one compile for several clips).
    traced = jax.jit(lambda cc: echo_sample(keys[0], fx, log_s, clip=cc))(c)
    np.testing.assert_allclose(traced, batched[0], atol=1e-6)


def test_multiplicative_variant_is_exp_of_additive():
    fx, log_s = _inputs()
    c = echo_clip(B - 1)
    key = jax.random.PRNGKey(9)
    z_add = echo_sample(key, fx, log_s, clip=c)
    z_mul = echo_sample(key, fx, log_s, clip=c, multiplicative=True)
    np.testing.assert_allclose(np.log(z_mul), z_add, atol=1e-5)


def test_bad_input_is_rejected():
    fx, log_s = _inputs()
    with pytest.raises(ValueError, match="shape"):
        echo_sample(jax.random.PRNGKey(0), fx[None], log_s[None], clip=0.8)
    with pytest.raises(ValueError, match="at least 2"):
        echo_sample(jax.random.PRNGKey(0), fx[:1], log_s[:1], clip=0.8)
    with pytest.raises(ValueError, match="order"):
        echo_sample(jax.random.PRNGKey(0), fx, log_s, clip=0.8, order="shared")


@pytest.mark.parametrize("clip", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_a_clip_outside_the_unit_interval_is_refused(clip):
    log_s = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="clip must lie in"):
        echo_rate(log_s, clip=clip)
    with pytest.raises(ValueError, match="clip must lie in"):
        echo_sample(jax.random.PRNGKey(0), log_s, log_s, clip=clip)
    # A traced clip cannot be checked where it is traced; it still computes.
    assert np.isfinite(jax.jit(lambda c: echo_rate(log_s, clip=c))(0.5)).all()
