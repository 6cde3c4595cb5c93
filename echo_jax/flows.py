"""Masked autoregressive networks and flows: MADE, a distrax bijector, and the IAF/MAF stack.

distrax has no autoregressive bijector, so this module supplies one. The building block is a MADE
(Germain et al. 2015) with TensorFlow Probability's block masks, as used by the original code through
``tfp.bijectors.masked_autoregressive_default_template``: output i depends only on x_{<i}.

One step of the flow, with (shift, log_scale) = MADE(x), has two directions:

* the **parallel** direction, one MADE pass: ``y = (x - shift(x)) * exp(-log_scale(x))``;
  log|det dy/dx| = -sum_i log_scale_i. This is the IAF step of the original
  (``Invert(MaskedAutoregressiveFlow)``, i.e. TFP's MAF *inverse*) and the density direction of a MAF.
* the **sequential** direction, D passes: ``x_i = y_i * exp(log_scale_i(x_{<i})) + shift_i(x_{<i})``.
  This is TFP's MAF forward (sampling from a MAF marginal).

Here the parallel direction is always the *forward* one. Shift-only steps (the original's choice)
have log_scale = 0 and are volume preserving (log-det 0).

Usage: IAF encoder: ``z, log_det = flow(z0)``, ``log q(z|x) = log N(z0; mu, sigma^2) - log_det``.
MAF marginal: ``u, log_det = flow(z)``, ``log m(z) = log N(u; 0, I) + log_det``; sampling
``z, _ = flow.inverse(u)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# TFP's default template bounds the log-scale to this range (affine steps only).
LOG_SCALE_MIN = -5.0
LOG_SCALE_MAX = 3.0


def autoregressive_mask(num_blocks: int, n_in: int, n_out: int, exclusive: bool) -> np.ndarray:
    """TFP's MADE block mask for a dense kernel of shape (n_in, n_out).

    Input unit c belongs to block c // (n_in // num_blocks), output unit r to block
    r // (n_out // num_blocks). An exclusive mask connects input block b to the outputs of blocks
    > b (the first layer: hidden units of block k see x_{<k}); an inclusive mask to blocks >= b
    (later layers). Inputs past the last whole block are left unconnected; outputs past it see
    every block, exactly as in TFP's ``_gen_mask``.

    Args:
      num_blocks: the number of autoregressive blocks (the event size D).
      n_in: input units of the layer.
      n_out: output units of the layer.
      exclusive: True for the first layer of a MADE.

    Returns:
      A float32 numpy array of shape (n_in, n_out) of zeros and ones.
    """
    if num_blocks < 1 or n_out // num_blocks < 1:
        raise ValueError(
            f"autoregressive_mask: a layer of {n_out} units cannot hold {num_blocks} autoregressive "
            f"blocks; use at least {num_blocks} units (the event size) in every layer"
        )
    block_in = n_in // num_blocks
    block_out = n_out // num_blocks
    mask = np.zeros((n_out, n_in), dtype=np.float32)
    first_row = block_out if exclusive else 0
    for block in range(num_blocks):
        mask[first_row + block * block_out :, block * block_in : (block + 1) * block_in] = 1.0
    return mask.T


class MaskedDense(nn.Module):
    """A dense layer whose kernel is multiplied by an `autoregressive_mask`.

    Attributes:
      features: output units.
      num_blocks: the event size D of the MADE.
      exclusive: True for the first layer (hidden units of block k see x_{<k}).
      kernel_init: initializer of the full kernel; masked entries are zeroed at init and ignored.
    """

    features: int
    num_blocks: int
    exclusive: bool
    kernel_init: Callable = nn.initializers.glorot_normal()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        mask = jnp.asarray(
            autoregressive_mask(self.num_blocks, x.shape[-1], self.features, self.exclusive), dtype=x.dtype
        )
        kernel = self.param(
            "kernel", lambda key, shape: mask * self.kernel_init(key, shape), (x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return x @ (kernel * mask) + bias


def _zero_extra_params_init(num_params: int, base_init: Callable) -> Callable:
    """`base_init` for the shift columns of a MADE output kernel, zero for the other parameters."""

    def init(key: Array, shape: tuple[int, int]) -> Array:
        kernel = base_init(key, shape)
        is_shift_column = (np.arange(shape[1]) % num_params) == 0
        return kernel * jnp.asarray(is_shift_column, dtype=kernel.dtype)

    return init


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation with TFP's masks.

    ``MADE()(x)`` maps x of shape (..., D) to parameters of shape (..., D, num_params) such that
    ``out[..., i, :]`` depends only on ``x[..., :i]`` (``out[..., 0, :]`` is a learned constant).
    Hidden layer 0 uses an exclusive mask, the others and the output an inclusive one, as TFP's
    ``masked_autoregressive_default_template``. Kernels start glorot-normal (TFP's default), biases
    zero; parameters after the first (the flows' log-scale) start with zero output weights, so an
    affine flow starts as the shift-only flow with unit scales.

    Attributes:
      hidden_sizes: units of each hidden layer; each must be at least D.
      num_params: parameters per dimension (1: shift; 2: shift and log-scale).
      activation: hidden-layer nonlinearity.
    """

    hidden_sizes: Sequence[int] = (640, 640, 640)
    num_params: int = 1
    activation: Callable[[Array], Array] = nn.relu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Autoregressive parameters of x.

        Args:
          x: (..., D) inputs.

        Returns:
          (..., D, num_params) outputs; entry i depends only on x[..., :i].
        """
        if x.ndim < 1 or x.shape[-1] < 1:
            raise ValueError(f"MADE: input must have shape (..., D) with D >= 1, got {x.shape}")
        if self.num_params < 1:
            raise ValueError(f"MADE: num_params must be >= 1, got {self.num_params}")
        dim = x.shape[-1]
        too_small = [units for units in self.hidden_sizes if units < dim]
        if too_small:
            raise ValueError(
                f"MADE: hidden sizes {tuple(self.hidden_sizes)} include layers narrower than the "
                f"event size {dim}; every hidden layer needs at least {dim} units"
            )
        hidden = x
        for layer, units in enumerate(self.hidden_sizes):
            hidden = MaskedDense(units, num_blocks=dim, exclusive=layer == 0, name=f"hidden_{layer}")(hidden)
            hidden = self.activation(hidden)
        output_init = _zero_extra_params_init(self.num_params, nn.initializers.glorot_normal())
        out = MaskedDense(
            dim * self.num_params, num_blocks=dim, exclusive=False, kernel_init=output_init, name="output"
        )(hidden)
        # Output unit r belongs to block r // num_params: TFP's (D, num_params) layout.
        return out.reshape(x.shape[:-1] + (dim, self.num_params))


class MaskedAutoregressive(distrax.Bijector):
    """One masked autoregressive affine step as a distrax bijector.

    Forward is the **parallel** direction ``y = (x - shift(x)) * exp(-log_scale(x))`` (one conditioner
    call; the IAF step, and the density direction of a MAF). Inverse is the **sequential** direction,
    D conditioner calls. With one parameter per dimension the step is shift-only, ``y = x - shift(x)``,
    with log-det 0. Log-scales are clipped to [LOG_SCALE_MIN, LOG_SCALE_MAX] in value, with the
    gradient passed straight through, as TFP's default template does.

    Args:
      conditioner: a callable mapping x of shape (..., D) to (..., D, P) with P in {1, 2}
        (shift, then log-scale); entry i must depend only on x[..., :i], e.g. a bound `MADE`.
    """

    def __init__(self, conditioner: Callable[[Array], Array]):
        super().__init__(event_ndims_in=1)
        self._conditioner = conditioner

    def _shift_and_log_scale(self, x: Array) -> tuple[Array, Array | None]:
        params = self._conditioner(x)
        if params.shape != x.shape + params.shape[-1:] or params.shape[-1] not in (1, 2):
            raise ValueError(
                f"MaskedAutoregressive: the conditioner must map {x.shape} to {x.shape + (1,)} "
                f"(shift) or {x.shape + (2,)} (shift, log-scale), got {params.shape}"
            )
        if params.shape[-1] == 1:
            return params[..., 0], None
        log_scale = params[..., 1]
        clipped = jnp.clip(log_scale, LOG_SCALE_MIN, LOG_SCALE_MAX)
        return params[..., 0], log_scale + jax.lax.stop_gradient(clipped - log_scale)

    def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
        """The parallel direction y = (x - shift(x)) * exp(-log_scale(x)) and log|det dy/dx|."""
        self._check_forward_input_shape(x)
        shift, log_scale = self._shift_and_log_scale(x)
        if log_scale is None:
            return x - shift, jnp.zeros(x.shape[:-1], x.dtype)
        return (x - shift) * jnp.exp(-log_scale), -jnp.sum(log_scale, axis=-1)

    def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
        """The sequential direction x = y * exp(log_scale(x)) + shift(x) and log|det dx/dy|.

        After pass k the first k entries of x are exact, so D passes recover all of x; the last
        pass sees x[:D-1] exact, so its log-scales are those of the returned x.
        """
        self._check_inverse_input_shape(y)

        def sequential_pass(x: Array) -> tuple[Array, Array]:
            shift, log_scale = self._shift_and_log_scale(x)
            if log_scale is None:
                return y + shift, jnp.zeros_like(y)
            return y * jnp.exp(log_scale) + shift, log_scale

        # The first pass runs outside the loop so that a Flax conditioner creates its parameters
        # there (during init) rather than inside a traced loop body.
        x, log_scale = sequential_pass(jnp.zeros_like(y))
        x, log_scale = jax.lax.fori_loop(1, y.shape[-1], lambda _, carry: sequential_pass(carry[0]), (x, log_scale))
        return x, jnp.sum(log_scale, axis=-1)


class AutoregressiveFlow(nn.Module):
    """A stack of masked autoregressive steps with reversals between them (IAF / MAF).

    ``__call__`` is the parallel direction: step 0, reverse, step 1, reverse, ..., step n-1 (no
    reversal after the last step), as the original's TFP chain. ``inverse`` runs the sequential
    direction back through the same steps.

    Attributes:
      num_steps: number of autoregressive steps.
      hidden_sizes: MADE hidden layers of each step; each at least the event size.
      affine: False for shift-only (volume-preserving) steps as in the original; True to learn a
        log-scale as well.
    """

    num_steps: int = 4
    hidden_sizes: Sequence[int] = (640, 640, 640)
    affine: bool = False

    def setup(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"AutoregressiveFlow: num_steps must be >= 1, got {self.num_steps}")
        self.steps = [
            MADE(hidden_sizes=tuple(self.hidden_sizes), num_params=2 if self.affine else 1, name=f"made_{step}")
            for step in range(self.num_steps)
        ]

    def _check_input(self, x: Array, method: str) -> None:
        if x.ndim < 1 or x.shape[-1] < 1:
            raise ValueError(f"AutoregressiveFlow.{method}: input must have shape (..., D) with D >= 1, got {x.shape}")

    def __call__(self, x: Array) -> tuple[Array, Array]:
        """The parallel direction.

        Args:
          x: (..., D) inputs.

        Returns:
          y of shape (..., D) and log|det dy/dx| of shape x.shape[:-1].
        """
        self._check_input(x, "__call__")
        log_det = jnp.zeros(x.shape[:-1], x.dtype)
        for index, made in enumerate(self.steps):
            if index > 0:
                x = x[..., ::-1]
            x, step_log_det = MaskedAutoregressive(made).forward_and_log_det(x)
            log_det = log_det + step_log_det
        return x, log_det

    def inverse(self, y: Array) -> tuple[Array, Array]:
        """The sequential direction, inverse of `__call__`.

        Args:
          y: (..., D) outputs of the parallel direction.

        Returns:
          x of shape (..., D) and log|det dx/dy| of shape y.shape[:-1].
        """
        self._check_input(y, "inverse")
        log_det = jnp.zeros(y.shape[:-1], y.dtype)
        for index in reversed(range(self.num_steps)):
            y, step_log_det = MaskedAutoregressive(self.steps[index]).inverse_and_log_det(y)
            log_det = log_det + step_log_det
            if index > 0:
                y = y[..., ::-1]
        return y, log_det
