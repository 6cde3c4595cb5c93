"""Separated Attribute Predictability (Kumar et al., 2018), after disentanglement_lib's `compute_sap`.

A score matrix S[j, k] says how well code dimension j alone predicts factor k; SAP is the mean over
factors of the gap between the two best dimensions, sorted per factor.

  * Continuous factors: S[j, k] is the squared Pearson correlation of z_j and y_k on the training
    points (0 for a constant dimension), exactly as dlib.
  * Discrete factors (the default, as in dlib's configs): S[j, k] is the test accuracy of a
    one-dimensional classifier trained on z_j. dlib trains sklearn's `LinearSVC(C=0.01,
    class_weight="balanced")`; here the classifier is nearest class mean (the Bayes rule of
    Gaussian classes with a shared variance and equal priors, equal priors standing in for the
    balanced class weights), which is closed-form and runs in jnp for all (j, k) pairs at once.
    Numbers therefore differ from dlib's, most for factors whose classes are not ordered along z_j.
    Test labels never seen in training count as errors.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from echo_jax.metrics import _validation


@jax.jit
def _squared_correlation(codes: jax.Array, factors: jax.Array) -> jax.Array:
    """(D, K) squared Pearson correlations; 0 where a code dimension is (numerically) constant."""
    codes = codes - codes.mean(axis=0)
    factors = factors - factors.mean(axis=0)
    covariance = codes.T @ factors  # (D, K), the common 1 / (N - 1) cancels
    code_var = (codes**2).sum(axis=0)
    factor_var = (factors**2).sum(axis=0)
    score = covariance**2 / (jnp.maximum(code_var, 1e-30)[:, None] * factor_var[None, :])
    return jnp.where((code_var / codes.shape[0] > 1e-12)[:, None], score, 0.0)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _nearest_mean_accuracy(
    codes: jax.Array, labels: jax.Array, codes_test: jax.Array, labels_test: jax.Array, num_classes: int
) -> jax.Array:
    """(D, K) test accuracy of nearest-class-mean classifiers, one per (code dim, factor) pair."""
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=codes.dtype)  # (N, K, C)
    class_counts = one_hot.sum(axis=0)  # (K, C)
    class_means = jnp.einsum("nd,nkc->dkc", codes, one_hot) / jnp.maximum(class_counts, 1.0)

    def accuracy_for_factor(args):
        means, counts, truth = args  # (D, C), (C,), (Nt,)
        distance = jnp.abs(codes_test[:, :, None] - means[None])  # (Nt, D, C)
        distance = jnp.where(counts > 0, distance, jnp.inf)  # classes absent from training
        predicted = jnp.argmin(distance, axis=-1)  # (Nt, D)
        return (predicted == truth[:, None]).mean(axis=0)  # (D,)

    per_factor = jax.lax.map(accuracy_for_factor, (jnp.moveaxis(class_means, 1, 0), class_counts, labels_test.T))
    return per_factor.T


@jax.jit
def _gap_of_top_two(score_matrix: jax.Array) -> jax.Array:
    top_two = jax.lax.top_k(score_matrix.T, 2)[0]
    return top_two[:, 0] - top_two[:, 1]


def sap(
    codes: Any, factors: Any, codes_test: Any = None, factors_test: Any = None, *, continuous_factors: bool = False
) -> dict[str, jax.Array]:
    """SAP score from arrays (see the module docstring for the per-dimension predictor).

    Args:
      codes: (N, D) real training codes, D >= 2.
      factors: (N, K) integer factor classes of the training points.
      codes_test: (M, D) test codes; required unless continuous_factors.
      factors_test: (M, K) test factor classes; required unless continuous_factors.
      continuous_factors: score with squared correlation (training points only) instead of
        classification accuracy.

    Returns:
      {"sap": mean gap, "per_factor": (K,) gaps, "score_matrix": (D, K)}.
    """
    codes = _validation.check_codes(codes, min_dims=2)
    factors = _validation.check_factors(factors, codes.shape[0])
    if continuous_factors:
        score_matrix = _squared_correlation(jnp.asarray(codes, jnp.float32), jnp.asarray(factors, jnp.float32))
    else:
        if codes_test is None or factors_test is None:
            raise ValueError(
                "sap with discrete factors needs codes_test and factors_test "
                "(the accuracy is measured on held-out points)."
            )
        codes_test = _validation.check_codes(codes_test, "codes_test", min_dims=codes.shape[1])
        if codes_test.shape[1] != codes.shape[1]:
            raise ValueError(
                f"codes_test has {codes_test.shape[1]} dimensions, codes has "
                f"{codes.shape[1]}; they must come from the same representation."
            )
        factors_test = _validation.check_factors(factors_test, codes_test.shape[0], "factors_test")
        if factors_test.shape[1] != factors.shape[1]:
            raise ValueError(f"factors_test has {factors_test.shape[1]} factors, factors has {factors.shape[1]}.")
        labels, num_classes = _validation.relabel(factors)
        labels_test, _ = _validation.relabel(factors_test, classes_from=factors)
        score_matrix = _nearest_mean_accuracy(
            jnp.asarray(codes, jnp.float32),
            jnp.asarray(labels),
            jnp.asarray(codes_test, jnp.float32),
            jnp.asarray(labels_test),
            num_classes,
        )
    per_factor = _gap_of_top_two(score_matrix)
    return {"sap": per_factor.mean(), "per_factor": per_factor, "score_matrix": score_matrix}
