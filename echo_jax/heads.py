"""Stochastic heads: from trunk features to a latent sample z and what the rate needs.

Each head maps features (B, F) to a `HeadOutput`. Randomness comes from the Flax RNG stream ``"noise"``.

- `EchoHead`: z = f + S * eps with Echo noise; its rate is exact and needs no marginal.
- `GaussianHead`: z = mean + exp(log_var / 2) * N(0, I).
- `IAFHead`: a Gaussian base sample z0 pushed through an inverse autoregressive flow, z = T(z0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from echo_jax import noise
from echo_jax.flows import AutoregressiveFlow
from echo_jax.marginals import diag_gaussian_log_prob
from echo_jax.networks import keras_init

# The heads' Dense layers start as the trunks' do: Keras's defaults, as in the original code.
dense_init = keras_init

ECHO_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh16": noise.tanh16,
    "tanh64": noise.tanh64,
    "linear": lambda x: x,  # clipped to +-fx_bound by the head
}


class HeadOutput(NamedTuple):
    """What a head returns; fields a head has no use for are None.

    Attributes:
      z: (B, D) the sample the decoder sees.
      rate: (B,) an exact or analytic rate when the head has one (Echo), else None.
      mean, log_var: (B, D) the Gaussian (base) posterior parameters.
      z0: (B, D) the Gaussian base sample (IAF; equals z for the Gaussian head).
      log_q: (B,) log q(z | x) of the sample (Gaussian and IAF).
      log_q_base: (B,) log q(z0 | x) in the base space (IAF; equals log_q for the Gaussian head).
      log_scale: (B, D) the log of the noise scale per dimension: log S(x) = log c + log sigmoid(a(x)) for
        Echo, log sigma(x) = log_var / 2 of the Gaussian (base) posterior otherwise.
    """

    z: jax.Array
    rate: jax.Array | None = None
    mean: jax.Array | None = None
    log_var: jax.Array | None = None
    z0: jax.Array | None = None
    log_q: jax.Array | None = None
    log_q_base: jax.Array | None = None
    log_scale: jax.Array | None = None


class EchoHead(nn.Module):
    """Echo noise head: f = activation(Dense), log s = log_sigmoid(Dense), exact rate.

    Attributes:
      latent_dim: D.
      activation: one of ``ECHO_ACTIVATIONS`` (the paper uses tanh16).
      fx_bound: bound on |f| (1 for tanh; the linear activation is clipped to it).
      clip: the scale bound c; None solves it from the batch size with `noise.echo_clip`.
      order: ``"independent"`` or ``"cyclic"`` (see `noise.echo_sample`).
    """

    latent_dim: int
    activation: str = "tanh16"
    fx_bound: float = 1.0
    clip: float | None = None
    order: str = "independent"

    def clip_for(self, batch_size: int) -> float:
        return self.clip if self.clip is not None else noise.echo_clip(batch_size - 1, self.fx_bound)

    @nn.compact
    def __call__(self, features: jax.Array) -> HeadOutput:
        fx = ECHO_ACTIVATIONS[self.activation](nn.Dense(self.latent_dim, name="fx", **dense_init)(features))
        if self.activation == "linear":
            fx = noise.linear_clipped(fx, self.fx_bound)
        log_s = jax.nn.log_sigmoid(nn.Dense(self.latent_dim, name="log_s", **dense_init)(features))
        clip = self.clip_for(features.shape[0])
        z = noise.echo_sample(self.make_rng("noise"), fx, log_s, clip=clip, order=self.order)
        return HeadOutput(z=z, rate=noise.echo_rate(log_s, clip=clip), mean=fx, log_scale=jnp.log(clip) + log_s)


class GaussianParams(nn.Module):
    """Linear heads for the mean and log-variance of a diagonal Gaussian."""

    latent_dim: int

    @nn.compact
    def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = nn.Dense(self.latent_dim, name="mean", **dense_init)(features)
        log_var = nn.Dense(self.latent_dim, name="log_var", **dense_init)(features)
        return mean, log_var


class GaussianHead(nn.Module):
    """Diagonal Gaussian posterior with the reparameterisation trick."""

    latent_dim: int

    def setup(self):
        self.gaussian = GaussianParams(self.latent_dim)

    def posterior_params(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, log_var) of the Gaussian posterior, without sampling."""
        return self.gaussian(features)

    def __call__(self, features: jax.Array) -> HeadOutput:
        mean, log_var = self.gaussian(features)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(self.make_rng("noise"), mean.shape)
        log_q = diag_gaussian_log_prob(z, mean, log_var)
        return HeadOutput(z=z, mean=mean, log_var=log_var, z0=z, log_q=log_q, log_q_base=log_q, log_scale=0.5 * log_var)


class IAFHead(nn.Module):
    """Inverse autoregressive flow posterior: z0 ~ N(mean, var), z = T(z0).

    The flow has no x-context (as in the original); shift-only steps are volume preserving.
    """

    latent_dim: int
    num_steps: int = 4
    hidden_sizes: Sequence[int] = (640, 640, 640)
    affine: bool = False

    def setup(self):
        self.gaussian = GaussianParams(self.latent_dim)
        self.iaf = AutoregressiveFlow(self.num_steps, tuple(self.hidden_sizes), self.affine)

    def posterior_params(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, log_var) of the Gaussian base distribution, without sampling."""
        return self.gaussian(features)

    def __call__(self, features: jax.Array) -> HeadOutput:
        mean, log_var = self.gaussian(features)
        z0 = mean + jnp.exp(0.5 * log_var) * jax.random.normal(self.make_rng("noise"), mean.shape)
        z, log_det = self.iaf(z0)
        log_q_base = diag_gaussian_log_prob(z0, mean, log_var)
        return HeadOutput(
            z=z,
            mean=mean,
            log_var=log_var,
            z0=z0,
            log_q=log_q_base - log_det,
            log_q_base=log_q_base,
            log_scale=0.5 * log_var,
        )
