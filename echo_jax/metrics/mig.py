"""Mutual Information Gap (Chen et al., 2018), as disentanglement_lib's `discrete_mig`.

For each factor y_k: discretise every code dimension into `num_bins` histogram bins, take the
mutual information I(z_j; y_k) in nats (sklearn's plug-in `mutual_info_score`), and report the gap
between the two most informative dimensions divided by the factor entropy H(y_k):

    MIG_k = (I(z_(1); y_k) - I(z_(2); y_k)) / H(y_k),    MIG = mean_k MIG_k.

The original Echo code returned the per-factor vector; disentanglement_lib reports the mean. Both
are returned here.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from echo_jax.metrics import _validation
from echo_jax.metrics._discretize import discretize
from echo_jax.metrics._information import discrete_entropy, discrete_mutual_info
from echo_jax.metrics.sampling import FactorSampler, Renderer, Representer, generate_codes


@functools.partial(jax.jit, static_argnames=("num_bins", "num_classes"))
def _mig_from_labels(
    code_bins: jax.Array, factor_labels: jax.Array, num_bins: int, num_classes: int
) -> tuple[jax.Array, jax.Array]:
    mutual_info = discrete_mutual_info(code_bins, factor_labels, num_bins, num_classes)  # (D, K)
    entropy = discrete_entropy(factor_labels, num_classes)  # (K,)
    top_two = jax.lax.top_k(mutual_info.T, 2)[0]  # (K, 2), sorted descending
    per_factor = (top_two[:, 0] - top_two[:, 1]) / entropy
    return per_factor.mean(), per_factor


def mig(codes: Any, factors: Any, *, num_bins: int = 20) -> dict[str, jax.Array]:
    """Mutual Information Gap of a representation, from arrays.

    Args:
      codes: (N, D) real codes, D >= 2 (the gap needs two dimensions).
      factors: (N, K) integer factor classes of the same N points; every factor must take at least
        two values (a constant factor has zero entropy and no gap to normalise).
      num_bins: histogram bins per code dimension (20 in the original's `mig20`).

    Returns:
      {"mig": scalar mean over factors, "per_factor": (K,) array}, float32 jnp arrays.
    """
    codes = _validation.check_codes(codes, min_dims=2)
    factors = _validation.check_factors(factors, codes.shape[0])
    labels, num_classes = _validation.relabel(factors)
    constant = [k for k in range(labels.shape[1]) if labels[:, k].max() == 0]
    if constant:
        raise ValueError(
            f"factor column(s) {constant} take a single value, so their entropy is 0 and MIG is "
            "undefined; drop those columns or sample more points."
        )
    code_bins = discretize(codes, num_bins)
    mean, per_factor = _mig_from_labels(jnp.asarray(code_bins), jnp.asarray(labels), int(num_bins), num_classes)
    return {"mig": mean, "per_factor": per_factor}


def mig_from_model(
    sample_factors: FactorSampler,
    render: Renderer,
    represent: Representer,
    *,
    num_points: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
    num_bins: int = 20,
) -> dict[str, jax.Array]:
    """MIG of a model on a ground-truth world: sample, render, represent, then `mig`.

    The original drew 9,984 points with a random state forced to seed 0 (disentanglement_lib
    draws 10,000 from the caller's state); here the seed is an argument, default 0.

    Args:
      sample_factors: (rng, n) -> (n, K) integer factor classes, rng a np.random.Generator.
      render: (n, K) factors -> n observations.
      represent: batch_size observations -> (batch_size, D) codes; may be stochastic.
      num_points: points used for the estimate.
      batch_size: observations per represent() call.
      seed: seed of the factor sampler's generator.
      num_bins: histogram bins per code dimension.

    Returns:
      As `mig`.
    """
    codes, factors = generate_codes(sample_factors, render, represent, num_points, batch_size=batch_size, seed=seed)
    return mig(codes, factors, num_bins=num_bins)
