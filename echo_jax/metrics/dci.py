"""Disentanglement, Completeness, Informativeness (Eastwood & Williams, 2018).

Importance model: a Lasso linear regression of each standardised factor on the standardised code,
the first of the two regressors of Eastwood & Williams' paper, solved in jnp with FISTA on the
(D, D) Gram matrix. It minimises sklearn's `Lasso` objective

    1 / (2N) * ||y_k - Z w_k||^2 + l1_penalty * ||w_k||_1,

and the importance of code dimension j for factor k is |w_k[j]|. Disentanglement and completeness
are then exactly disentanglement_lib's: one minus the entropy of each row (base K) or column
(base D) of the normalised importance matrix (plus 1e-11), weighted by the row or column share of
the total importance.

Departures from disentanglement_lib, which uses sklearn's `GradientBoostingClassifier` per factor
(importance = feature_importances_, informativeness = train/test classification accuracy):
  * the importance comes from the Lasso weights above, so a factor coded non-linearly or
    non-monotonically gets little importance;
  * factor classes are regressed as ordinal values (class index), and informativeness is
    reported as the normalised root-mean-square error of the Lasso prediction of the
    standardised factor, `nrmse_train` and `nrmse_test` (0 perfect, about 1 uninformative; lower
    is better), Eastwood & Williams' measure, rather than dlib's accuracies.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from echo_jax.metrics import _validation


def _standardise(values: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    return (values - mean) / jnp.where(std > 0, std, 1.0)  # constant columns become 0


@functools.partial(jax.jit, static_argnames=("num_iterations",))
def _lasso_weights(design: jax.Array, targets: jax.Array, l1_penalty: jax.Array, num_iterations: int) -> jax.Array:
    """(D, K) Lasso weights for centred `design` (N, D) and centred `targets` (N, K), by FISTA."""
    num_points = design.shape[0]
    gram = design.T @ design / num_points
    correlation = design.T @ targets / num_points
    step = 1.0 / jnp.maximum(jnp.linalg.eigvalsh(gram)[-1], 1e-12)  # 1 / Lipschitz constant

    def shrink(weights):
        return jnp.sign(weights) * jnp.maximum(jnp.abs(weights) - step * l1_penalty, 0.0)

    def fista_step(_, state):
        weights, momentum_point, t = state
        new_weights = shrink(momentum_point - step * (gram @ momentum_point - correlation))
        new_t = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        momentum_point = new_weights + ((t - 1.0) / new_t) * (new_weights - weights)
        return new_weights, momentum_point, new_t

    zeros = jnp.zeros_like(correlation)
    weights, _, _ = jax.lax.fori_loop(0, num_iterations, fista_step, (zeros, zeros, jnp.float32(1.0)))
    return weights


def _one_minus_entropy(probabilities_unnormalised: jax.Array, base: int) -> jax.Array:
    """1 - entropy (base `base`) of each row, after scipy.stats.entropy's normalisation."""
    p = probabilities_unnormalised / probabilities_unnormalised.sum(axis=-1, keepdims=True)
    return 1.0 + (p * jnp.log(p)).sum(axis=-1) / jnp.log(base)


@jax.jit
def _disentanglement_completeness(importance: jax.Array) -> tuple[jax.Array, jax.Array]:
    num_codes, num_factors = importance.shape
    per_code = _one_minus_entropy(importance + 1e-11, num_factors)
    per_factor = _one_minus_entropy(importance.T + 1e-11, num_codes)
    # dlib's guard: an all-zero importance matrix weights codes and factors uniformly.
    weights = jnp.where(importance.sum() == 0.0, jnp.ones_like(importance), importance)
    code_share = weights.sum(axis=1) / weights.sum()
    factor_share = weights.sum(axis=0) / weights.sum()
    return (per_code * code_share).sum(), (per_factor * factor_share).sum()


@jax.jit
def _nrmse(design: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """Root-mean-square error of design @ weights against standardised targets, mean over factors."""
    return jnp.sqrt(((design @ weights - targets) ** 2).mean(axis=0)).mean()


def dci(
    codes: Any,
    factors: Any,
    codes_test: Any,
    factors_test: Any,
    *,
    l1_penalty: float = 0.02,
    num_iterations: int = 2_000,
) -> dict[str, jax.Array]:
    """DCI scores from arrays, with a Lasso importance model (see the module docstring).

    Args:
      codes: (N, D) real training codes.
      factors: (N, K) integer factor classes of the training points, K >= 2 for a meaningful
        disentanglement entropy (base K).
      codes_test: (M, D) test codes.
      factors_test: (M, K) test factor classes.
      l1_penalty: Lasso penalty (sklearn's `alpha`) on standardised data.
      num_iterations: FISTA iterations; each costs one (D, D) x (D, K) product.

    Returns:
      {"disentanglement", "completeness", "nrmse_train", "nrmse_test": scalars,
        "importance_matrix": (D, K)}.
    """
    codes, factors, codes_test, factors_test = _validation.check_train_test(codes, factors, codes_test, factors_test)
    if factors.shape[1] < 2 or codes.shape[1] < 2:
        raise ValueError(
            "dci needs at least 2 factors and 2 code dimensions (its entropies are taken "
            f"in base K and base D); got K={factors.shape[1]}, D={codes.shape[1]}."
        )
    if not l1_penalty >= 0 or int(num_iterations) != num_iterations or num_iterations < 1:
        raise ValueError(
            f"need l1_penalty >= 0 and a positive integer num_iterations; got {l1_penalty!r}, {num_iterations!r}."
        )
    codes, codes_test = jnp.asarray(codes, jnp.float32), jnp.asarray(codes_test, jnp.float32)
    factors, factors_test = jnp.asarray(factors, jnp.float32), jnp.asarray(factors_test, jnp.float32)
    code_mean, code_std = codes.mean(axis=0), codes.std(axis=0)
    factor_mean, factor_std = factors.mean(axis=0), factors.std(axis=0)
    design = _standardise(codes, code_mean, code_std)
    design_test = _standardise(codes_test, code_mean, code_std)
    targets = _standardise(factors, factor_mean, factor_std)
    targets_test = _standardise(factors_test, factor_mean, factor_std)
    weights = _lasso_weights(design, targets, jnp.float32(l1_penalty), int(num_iterations))
    importance = jnp.abs(weights)
    disentanglement, completeness = _disentanglement_completeness(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "nrmse_train": _nrmse(design, targets, weights),
        "nrmse_test": _nrmse(design_test, targets_test, weights),
        "importance_matrix": importance,
    }
