"""Modularity and explicitness (Ridgeway & Mozer, 2018), after disentanglement_lib.

Modularity, exactly as dlib: with m[j, k] the discrete mutual information between histogram-binned
code dimension j and factor k,

    modularity_j = 1 - (sum_k m[j, k]^2 - max_k m[j, k]^2) / (max_k m[j, k]^2 * (K - 1)),

0 for a dimension that carries no information, averaged over dimensions.

Explicitness: a multinomial logistic regression of each factor on the standardised code (dlib:
sklearn's `LogisticRegression()`, i.e. L2 penalty with C = 1, fitted by L-BFGS), scored by the
one-vs-rest ROC-AUC of its class probabilities, averaged over classes and then factors. Here the
same objective, mean cross-entropy + ||W||^2 / (2 C N) with an unpenalised intercept, is
minimised in jnp with optax's L-BFGS for all factors at once (vmapped). Departures: the softmax
parametrisation is used for two-class factors too (sklearn fits a single logistic weight vector
there, which differs in its effective penalty); classes missing from the evaluated split, whose
AUC is undefined, are left out of the average (dlib would fail); constant code dimensions are
standardised to 0 rather than divided by a zero standard deviation.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from echo_jax.metrics import _validation
from echo_jax.metrics._discretize import discretize
from echo_jax.metrics._information import discrete_mutual_info

# Logit added to classes a factor does not have (padding up to the largest class count).
_ABSENT_CLASS_LOGIT = -1e9


@jax.jit
def modularity_from_mutual_info(mutual_info: jax.Array) -> jax.Array:
    """Mean modularity over code dimensions from a (D, K) mutual information matrix, K >= 2."""
    squared = mutual_info**2
    top = squared.max(axis=1)
    deviation = (squared.sum(axis=1) - top) / jnp.where(top > 0, top * (squared.shape[1] - 1.0), 1.0)
    return jnp.where(top > 0, 1.0 - deviation, 0.0).mean()


def _fit_logistic(
    design: jax.Array,
    labels: jax.Array,
    class_mask: jax.Array,
    inverse_l2: float,
    max_iterations: int,
    tolerance: float,
):
    """Multinomial logistic regression of `labels` (N,) on `design` (N, D) by L-BFGS."""
    num_points = design.shape[0]
    one_hot = jax.nn.one_hot(labels, class_mask.shape[0], dtype=design.dtype)
    absent = jnp.where(class_mask, 0.0, _ABSENT_CLASS_LOGIT)

    def objective(params):
        weights, bias = params
        log_probs = jax.nn.log_softmax(design @ weights + bias + absent, axis=-1)
        cross_entropy = -(one_hot * log_probs).sum(axis=-1).mean()
        return cross_entropy + (weights**2).sum() / (2.0 * inverse_l2 * num_points)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)
    params = (
        jnp.zeros((design.shape[1], class_mask.shape[0]), design.dtype),
        jnp.zeros((class_mask.shape[0],), design.dtype),
    )

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=objective)
        return optax.apply_updates(params, updates), state

    def keep_going(carry):
        _, state = carry
        count = otu.tree_get(state, "count")
        grad_norm = otu.tree_norm(otu.tree_get(state, "grad"))
        return (count == 0) | ((count < max_iterations) & (grad_norm >= tolerance))

    params, _ = jax.lax.while_loop(keep_going, step, (params, solver.init(params)))
    return params


def _macro_roc_auc(probabilities: jax.Array, labels: jax.Array, class_mask: jax.Array) -> jax.Array:
    """One-vs-rest ROC-AUC averaged over classes with both positives and negatives in `labels`."""

    def auc_for_class(scores, positive):
        ordered = jnp.sort(scores)
        # Mid-ranks (1-based), ties sharing their average rank: the Mann-Whitney form of the AUC.
        ranks = 0.5 * (
            jnp.searchsorted(ordered, scores, side="left") + jnp.searchsorted(ordered, scores, side="right") + 1.0
        )
        num_pos = positive.sum()
        num_neg = positive.shape[0] - num_pos
        rank_sum = jnp.where(positive, ranks, 0.0).sum()
        auc = (rank_sum - num_pos * (num_pos + 1.0) / 2.0) / jnp.maximum(num_pos * num_neg, 1.0)
        return auc, (num_pos > 0) & (num_neg > 0)

    positives = labels[:, None] == jnp.arange(probabilities.shape[1])[None, :]
    aucs, defined = jax.vmap(auc_for_class, in_axes=(1, 1))(probabilities, positives)
    defined = defined & class_mask
    return jnp.where(defined, aucs, 0.0).sum() / jnp.maximum(defined.sum(), 1)


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def _explicitness(design, labels, design_test, labels_test, class_mask, inverse_l2, max_iterations, tolerance):
    """(train, test) explicitness averaged over factors; labels are (N, K) with -1 = unseen."""

    def per_factor(labels_k, labels_test_k, mask_k):
        weights, bias = _fit_logistic(design, labels_k, mask_k, inverse_l2, max_iterations, tolerance)
        absent = jnp.where(mask_k, 0.0, _ABSENT_CLASS_LOGIT)
        prob_train = jax.nn.softmax(design @ weights + bias + absent, axis=-1)
        prob_test = jax.nn.softmax(design_test @ weights + bias + absent, axis=-1)
        return (_macro_roc_auc(prob_train, labels_k, mask_k), _macro_roc_auc(prob_test, labels_test_k, mask_k))

    train, test = jax.vmap(per_factor, in_axes=(1, 1, 0))(labels, labels_test, class_mask)
    return train.mean(), test.mean()


def modularity_explicitness(
    codes: Any,
    factors: Any,
    codes_test: Any,
    factors_test: Any,
    *,
    num_bins: int = 20,
    inverse_l2: float = 1.0,
    max_iterations: int = 500,
    tolerance: float = 1e-5,
) -> dict[str, jax.Array]:
    """Modularity (training points) and explicitness (train and test) from arrays.

    Args:
      codes: (N, D) real training codes.
      factors: (N, K) integer factor classes of the training points, K >= 2.
      codes_test: (M, D) test codes.
      factors_test: (M, K) test factor classes; classes unseen in training count as negatives
        of every class.
      num_bins: histogram bins per code dimension for the mutual information.
      inverse_l2: C of sklearn's LogisticRegression (inverse L2 strength).
      max_iterations: L-BFGS iteration cap per factor.
      tolerance: L-BFGS stops once the gradient norm falls below this.

    Returns:
      {"modularity", "explicitness_train", "explicitness_test"} as scalars.
    """
    codes, factors, codes_test, factors_test = _validation.check_train_test(codes, factors, codes_test, factors_test)
    if factors.shape[1] < 2:
        raise ValueError(f"modularity needs at least 2 factors; got {factors.shape[1]}.")
    if not inverse_l2 > 0 or int(max_iterations) != max_iterations or max_iterations < 1:
        raise ValueError(
            f"need inverse_l2 > 0 and a positive integer max_iterations; got {inverse_l2!r}, {max_iterations!r}."
        )
    labels, num_classes = _validation.relabel(factors)
    labels_test, _ = _validation.relabel(factors_test, classes_from=factors)
    class_mask = np.stack([np.arange(num_classes) <= labels[:, k].max() for k in range(labels.shape[1])])
    mutual_info = discrete_mutual_info(
        jnp.asarray(discretize(codes, num_bins)), jnp.asarray(labels), int(num_bins), num_classes
    )
    mean, std = codes.mean(axis=0), codes.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    train, test = _explicitness(
        jnp.asarray((codes - mean) / std, jnp.float32),
        jnp.asarray(labels),
        jnp.asarray((codes_test - mean) / std, jnp.float32),
        jnp.asarray(labels_test),
        jnp.asarray(class_mask),
        jnp.float32(inverse_l2),
        int(max_iterations),
        jnp.float32(tolerance),
    )
    return {
        "modularity": modularity_from_mutual_info(mutual_info),
        "explicitness_train": train,
        "explicitness_test": test,
    }
