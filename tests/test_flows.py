"""Tests for echo_jax.flows: MADE masks, the masked autoregressive bijector and the flow stack.

References are independent of the code under test: hand-derived masks, a numpy sequential solve,
and log-determinants from jax.jacfwd Jacobians evaluated by numpy's slogdet.
"""

from __future__ import annotations

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from echo_jax.flows import (
    LOG_SCALE_MAX,
    LOG_SCALE_MIN,
    MADE,
    AutoregressiveFlow,
    MaskedAutoregressive,
    autoregressive_mask,
)

DIM = 5
BATCH = 4
HIDDEN = (16, 16)
NUM_STEPS = 3
# Noise added to flow parameters so that log-scales are O(1): log-dets are far from 0 while the
# flow stays well conditioned in float32 (much larger noise gives shifts in the hundreds).
FLOW_PERTURBATION = 0.15


def perturb(params, seed, scale):
    """Adds N(0, scale^2) noise to every parameter, so that zero-initialised log-scales move."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: jnp.asarray(leaf + scale * rng.standard_normal(leaf.shape), jnp.float32), params)


def normal(seed, shape, scale=1.0):
    """Test inputs from numpy's generator (cheaper than compiling jax.random for each shape)."""
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@functools.cache
def flow_functions(affine: bool, num_steps: int = NUM_STEPS, hidden: tuple[int, ...] = HIDDEN):
    """Jitted parallel and sequential directions of one flow configuration, shared across tests."""
    flow = AutoregressiveFlow(num_steps=num_steps, hidden_sizes=hidden, affine=affine)
    forward = jax.jit(lambda params, x: flow.apply(params, x))
    inverse = jax.jit(lambda params, y: flow.apply(params, y, method="inverse"))
    return flow, forward, inverse


@pytest.fixture(scope="module")
def inputs():
    return normal(0, (BATCH, DIM), 1.5)


@pytest.fixture(scope="module", params=[False, True], ids=["shift_only", "affine"])
def flow_setup(request, inputs):
    affine = request.param
    flow, forward, inverse = flow_functions(affine)
    params = flow.init(jax.random.key(1), inputs)
    if affine:
        params = perturb(params, 2, FLOW_PERTURBATION)
    return affine, params, forward, inverse


def per_example_slogdet(function, x):
    """log|det| of the Jacobian of a (D,) -> (D,) function at each row of x, via numpy."""
    jacobians = np.asarray(jax.jit(jax.vmap(jax.jacfwd(function)))(x), dtype=np.float64)
    signs, log_dets = np.linalg.slogdet(jacobians)
    assert np.all(signs != 0)
    return log_dets, jacobians


def test_autoregressive_mask_matches_hand_derived_tfp_masks():
    # D = 2 blocks. Exclusive first layer with 4 hidden units: units 0-1 are block 0 (see no input),
    # units 2-3 block 1 (see x_0). The 5-unit version has one unit past the last block, which TFP
    # connects to every block it may see.
    np.testing.assert_array_equal(autoregressive_mask(2, 2, 4, exclusive=True), [[0, 0, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(autoregressive_mask(2, 2, 5, exclusive=True), [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]])
    # Inclusive 4 -> 4: hidden block 0 feeds everything, block 1 only block 1. As an output layer
    # with 2 parameters per dimension, units 0-1 are (shift_0, log_scale_0), units 2-3 those of x_1.
    np.testing.assert_array_equal(
        autoregressive_mask(2, 4, 4, exclusive=False), [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]
    )
    with pytest.raises(ValueError, match="at least 3 units"):
        autoregressive_mask(3, 3, 2, exclusive=True)


@pytest.mark.parametrize(
    "dim,hidden,num_params",
    [(DIM, HIDDEN, 1), (DIM, HIDDEN, 2), (3, (16, 7), 2)],
    ids=["shift", "shift_and_log_scale", "uneven_blocks"],
)
def test_made_jacobian_is_strictly_lower_triangular(dim, hidden, num_params):
    made = MADE(hidden_sizes=hidden, num_params=num_params, activation=jnp.tanh)
    x = normal(3, (dim,))
    params = perturb(made.init(jax.random.key(4), x), 5, 0.3)
    out, other, jacobian = jax.jit(
        lambda p, v: (made.apply(p, v), made.apply(p, v + 10.0), jax.jacfwd(made.apply, argnums=1)(p, v))
    )(params, x)
    assert out.shape == (dim, num_params)
    jacobian = np.asarray(jacobian)  # (dim, P, dim)
    rows, cols = np.indices((dim, dim))
    for p in range(num_params):
        block = jacobian[:, p, :]
        assert np.all(block[cols >= rows] == 0.0), f"output depends on x_j with j >= i:\n{block}"
        # With tanh and perturbed weights every allowed connection is live.
        assert np.all(np.abs(block[cols < rows]) > 1e-6), f"lower triangle has dead entries:\n{block}"
    # Output 0 is a learned constant.
    np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(other[0]))


def test_made_output_log_scale_starts_at_zero_and_shift_does_not():
    made = MADE(hidden_sizes=HIDDEN, num_params=2)
    x = normal(6, (BATCH, DIM))
    out = made.apply(made.init(jax.random.key(7), x), x)
    np.testing.assert_array_equal(np.asarray(out[..., 1]), 0.0)
    assert np.any(np.asarray(out[..., 1:, 0]) != 0.0)


def test_made_rejects_hidden_layers_narrower_than_the_event():
    made = MADE(hidden_sizes=(16, 4))
    with pytest.raises(ValueError, match="at least 5 units"):
        made.init(jax.random.key(0), jnp.zeros((2, 5)))


def lower_triangular_conditioner(seed, dim):
    """A hand-written autoregressive conditioner: strictly lower-triangular linear shift, tanh scale."""
    rng = np.random.default_rng(seed)
    shift_matrix = np.tril(rng.standard_normal((dim, dim)), k=-1).astype(np.float32)
    scale_matrix = np.tril(rng.standard_normal((dim, dim)), k=-1).astype(np.float32)
    shift_bias = rng.standard_normal(dim).astype(np.float32)
    scale_bias = 0.5 * rng.standard_normal(dim).astype(np.float32)

    def conditioner(x):
        shift = x @ shift_matrix.T + shift_bias
        log_scale = jnp.tanh(x @ scale_matrix.T) + scale_bias
        return jnp.stack([shift, log_scale], axis=-1)

    def numpy_sequential_inverse(y):
        x = np.zeros_like(y)
        for i in range(dim):
            shift = x @ shift_matrix[i] + shift_bias[i]
            log_scale = np.tanh(x @ scale_matrix[i]) + scale_bias[i]
            x[..., i] = y[..., i] * np.exp(log_scale) + shift
        return x

    return conditioner, numpy_sequential_inverse


def test_bijector_directions_and_log_dets_with_a_hand_written_conditioner(inputs):
    conditioner, numpy_inverse = lower_triangular_conditioner(8, DIM)
    bijector = MaskedAutoregressive(conditioner)
    y, forward_log_det = jax.jit(bijector.forward_and_log_det)(inputs)
    x_back, inverse_log_det = jax.jit(bijector.inverse_and_log_det)(y)
    np.testing.assert_allclose(x_back, inputs, atol=1e-5)
    np.testing.assert_allclose(numpy_inverse(np.asarray(y, np.float64)), inputs, atol=1e-5)
    reference_forward, jacobians = per_example_slogdet(bijector.forward, inputs)
    reference_inverse, _ = per_example_slogdet(bijector.inverse, y)
    np.testing.assert_allclose(forward_log_det, reference_forward, atol=1e-5)
    np.testing.assert_allclose(inverse_log_det, reference_inverse, atol=1e-5)
    assert np.all(np.abs(reference_forward) > 0.1)
    # The parallel direction of one step is triangular.
    rows, cols = np.indices((DIM, DIM))
    assert np.all(jacobians[:, cols > rows] == 0.0)

    # As a distrax bijector: a MAF density is a standard normal pushed through the inverse.
    density = distrax.Transformed(distrax.MultivariateNormalDiag(jnp.zeros(DIM)), distrax.Inverse(bijector))
    np.testing.assert_allclose(
        jax.jit(density.log_prob)(inputs),
        stats.norm.logpdf(np.asarray(y, np.float64)).sum(-1) + reference_forward,
        rtol=1e-5,
    )


def test_bijector_rejects_a_conditioner_of_the_wrong_shape():
    bijector = MaskedAutoregressive(lambda x: jnp.stack([x, x, x], axis=-1))
    with pytest.raises(ValueError, match="conditioner must map"):
        bijector.forward(jnp.zeros((2, 3)))


def test_bijector_log_scale_is_clipped_in_value_but_not_in_gradient():
    bijector = MaskedAutoregressive(lambda x: jnp.stack([jnp.zeros_like(x), x], axis=-1))
    x = jnp.array([-20.0, 0.5, 20.0])
    y, log_det = jax.jit(bijector.forward_and_log_det)(x)
    expected_log_scale = np.clip([-20.0, 0.5, 20.0], LOG_SCALE_MIN, LOG_SCALE_MAX)
    np.testing.assert_allclose(y, np.asarray(x) * np.exp(-expected_log_scale), rtol=1e-6)
    np.testing.assert_allclose(log_det, -expected_log_scale.sum(), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(bijector.forward_log_det_jacobian))(x), -1.0)


def test_flow_inverse_inverts_the_parallel_direction(flow_setup, inputs):
    _, params, forward, inverse = flow_setup
    y, _ = forward(params, inputs)
    x_back, _ = inverse(params, y)
    np.testing.assert_allclose(x_back, inputs, atol=1e-5)
    y_back, _ = forward(params, inverse(params, inputs)[0])
    np.testing.assert_allclose(y_back, inputs, atol=1e-5)
    assert np.max(np.abs(np.asarray(y - inputs))) > 0.1  # the flow is not the identity


def test_flow_log_dets_match_jacobian_determinants(flow_setup, inputs):
    affine, params, forward, inverse = flow_setup
    y, forward_log_det = forward(params, inputs)
    x_back, inverse_log_det = inverse(params, y)
    assert forward_log_det.shape == inverse_log_det.shape == (BATCH,)
    reference_forward, _ = per_example_slogdet(lambda v: forward(params, v)[0], inputs)
    reference_inverse, _ = per_example_slogdet(lambda v: inverse(params, v)[0], y)
    np.testing.assert_allclose(forward_log_det, reference_forward, atol=1e-4)
    np.testing.assert_allclose(inverse_log_det, reference_inverse, atol=1e-4)
    if affine:
        assert np.all(np.abs(reference_forward) > 0.1)
    else:
        np.testing.assert_array_equal(forward_log_det, 0.0)
        np.testing.assert_array_equal(inverse_log_det, 0.0)
        np.testing.assert_allclose(reference_forward, 0.0, atol=1e-5)


def test_flow_composes_steps_with_reversals_between_them(inputs):
    flow, forward, _ = flow_functions(True)
    params = perturb(flow.init(jax.random.key(9), inputs), 10, FLOW_PERTURBATION)
    made = MADE(hidden_sizes=HIDDEN, num_params=2)
    h = np.asarray(inputs, np.float64)
    reference_log_det = np.zeros(BATCH)
    for step in range(NUM_STEPS):
        if step > 0:
            h = h[:, ::-1]
        out = np.asarray(made.apply({"params": params["params"][f"made_{step}"]}, jnp.asarray(h)), np.float64)
        log_scale = np.clip(out[..., 1], LOG_SCALE_MIN, LOG_SCALE_MAX)
        h = (h - out[..., 0]) * np.exp(-log_scale)
        reference_log_det -= log_scale.sum(-1)
    y, log_det = forward(params, inputs)
    np.testing.assert_allclose(y, h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_det, reference_log_det, rtol=1e-5, atol=1e-5)


def test_single_step_flow_is_triangular_in_its_own_order(inputs):
    flow, forward, _ = flow_functions(False, num_steps=1)
    params = flow.init(jax.random.key(11), inputs)
    _, jacobians = per_example_slogdet(lambda v: forward(params, v)[0], inputs)
    rows, cols = np.indices((DIM, DIM))
    assert np.all(jacobians[:, cols > rows] == 0.0)
    np.testing.assert_array_equal(jacobians[:, rows == cols], 1.0)  # shift-only: unit diagonal


def test_flow_works_under_vmap_jit_and_grad(inputs):
    flow, forward, inverse = flow_functions(True)
    params = perturb(flow.init(jax.random.key(12), inputs), 13, FLOW_PERTURBATION)
    y, log_det = forward(params, inputs)
    y_single, log_det_single = jax.vmap(forward, in_axes=(None, 0))(params, inputs)
    np.testing.assert_allclose(y_single, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_det_single, log_det, rtol=1e-6, atol=1e-6)
    x_single, _ = jax.vmap(inverse, in_axes=(None, 0))(params, y)
    np.testing.assert_allclose(x_single, inputs, atol=1e-5)

    def loss(p):
        z, ld = forward(p, inputs)
        x_back, _ = inverse(p, z)
        return jnp.sum(ld) + jnp.sum(jnp.square(z)) + jnp.sum(x_back)

    grads = jax.jit(jax.grad(loss))(params)
    for step in range(NUM_STEPS):
        output_kernel_grad = np.asarray(grads["params"][f"made_{step}"]["output"]["kernel"])
        assert np.all(np.isfinite(output_kernel_grad))
        assert np.any(output_kernel_grad[:, 1::2] != 0.0)  # log-scale columns receive gradient


def test_flow_with_default_sizes_round_trips_and_preserves_volume():
    dim = 32
    x = normal(14, (2, dim))
    flow, forward, inverse = flow_functions(False, num_steps=4, hidden=(640, 640, 640))
    assert flow == AutoregressiveFlow()  # the defaults are the original's architecture
    params = flow.init(jax.random.key(15), x)
    assert params["params"]["made_0"]["hidden_0"]["kernel"].shape == (dim, 640)
    y, log_det = forward(params, x)
    np.testing.assert_array_equal(log_det, 0.0)
    np.testing.assert_allclose(inverse(params, y)[0], x, atol=1e-5)
    made = MADE()
    made_params = {"params": params["params"]["made_0"]}
    jacobian = np.asarray(jax.jit(jax.jacfwd(made.apply, argnums=1))(made_params, x[0]))[:, 0, :]
    rows, cols = np.indices((dim, dim))
    assert np.all(jacobian[cols >= rows] == 0.0)
    assert np.count_nonzero(jacobian[cols < rows]) > 0.9 * (dim * (dim - 1) // 2)


def test_flow_rejects_bad_inputs_and_settings():
    flow = AutoregressiveFlow(num_steps=2, hidden_sizes=HIDDEN)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., D\)"):
        flow.init(jax.random.key(0), jnp.zeros(()))
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        AutoregressiveFlow(num_steps=0, hidden_sizes=HIDDEN).init(jax.random.key(0), jnp.zeros((2, 3)))
