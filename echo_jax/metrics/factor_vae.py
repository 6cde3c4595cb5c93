"""FactorVAE disentanglement score (Kim & Mnih, 2018), as disentanglement_lib's `compute_factor_vae`.

Protocol:
  1. Global variances: per-dimension variance (ddof 1) of the codes of `num_variance_estimate`
     random observations. Dimensions with standard deviation below `prune_threshold` are inactive.
  2. A vote: pick a factor k uniformly, draw `batch_size` factor vectors, set factor k of all of
     them to the first one's value, render and represent them, divide each dimension's variance
     (ddof 1) by its global variance, and vote (k, the active dimension with the smallest ratio).
  3. Classifier: each code dimension predicts the factor that got most of its training votes.
     Accuracy = fraction of votes whose factor the classifier recovers, on `num_train` training
     votes and on `num_eval` fresh evaluation votes (the score).

Departures from disentanglement_lib, all deliberate:
  * dlib takes the argmin over the active dimensions and uses it as an index over *all*
    dimensions, so once a dimension is pruned the votes land in the wrong columns. Here the argmin
    is mapped back to the real dimension. The accuracies are unchanged by this (the quirk relabels
    columns consistently in training and evaluation), but the vote matrix now says which dimension
    encodes which factor.
  * dlib reports `num_active_dims = len(mask)`, i.e. always D; here it is the number of active
    dimensions. The "no active dimension -> scores 0" guard of dlib is kept (the Echo original had
    commented it out).
  * Factors come from a `np.random.Generator` (default seed 12, the original's), drawn a chunk of
    votes at a time, so the random stream differs from dlib's `RandomState` per-vote draws.
  * Observations are represented `batch_size` at a time, including for the variance estimate (as
    the original did with its batch-64 predict); whole batches only, surplus rows dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from echo_jax.metrics.sampling import (
    FactorSampler,
    Renderer,
    Representer,
    check_batch_size,
    check_sampled_factors,
    represent_factors,
)

# Votes drawn, rendered and reduced together; bounds memory (VOTES_PER_CHUNK * batch_size images).
VOTES_PER_CHUNK = 16


@jax.jit
def _vote_dims(codes: jax.Array, global_variances: jax.Array, active: jax.Array) -> jax.Array:
    """(V, B, D) codes of V votes -> (V,) index of the active dimension with least relative variance."""
    local_variances = jnp.var(codes, axis=1, ddof=1)
    ratio = jnp.where(active, local_variances / jnp.where(active, global_variances, 1.0), jnp.inf)
    return jnp.argmin(ratio, axis=-1)


@jax.jit
def _accuracy(votes: jax.Array, classifier: jax.Array) -> jax.Array:
    """Fraction of votes (K, D) whose factor equals classifier[dim]."""
    hits = jnp.take_along_axis(votes, classifier[None, :], axis=0).sum()
    return hits / jnp.maximum(votes.sum(), 1)


def _collect_votes(
    rng: np.random.Generator,
    sample_factors: FactorSampler,
    render: Renderer,
    represent: Representer,
    factor_sizes: tuple[int, ...],
    batch_size: int,
    num_votes: int,
    global_variances: jax.Array,
    active: jax.Array,
) -> np.ndarray:
    """(K, D) vote counts from `num_votes` fixed-factor batches."""
    num_factors = len(factor_sizes)
    votes = np.zeros((num_factors, global_variances.shape[0]), dtype=np.int32)
    for start in range(0, num_votes, VOTES_PER_CHUNK):
        chunk = min(VOTES_PER_CHUNK, num_votes - start)
        fixed = rng.integers(num_factors, size=chunk)
        factors = (
            check_sampled_factors(sample_factors(rng, chunk * batch_size), chunk * batch_size, factor_sizes)
            .reshape(chunk, batch_size, num_factors)
            .copy()
        )
        rows = np.arange(chunk)
        factors[rows, :, fixed] = factors[rows, 0, fixed][:, None]
        codes = represent_factors(render, represent, factors.reshape(-1, num_factors), batch_size)
        dims = np.asarray(_vote_dims(jnp.asarray(codes.reshape(chunk, batch_size, -1)), global_variances, active))
        np.add.at(votes, (fixed, dims), 1)
    return votes


def factor_vae_score(
    sample_factors: FactorSampler,
    render: Renderer,
    represent: Representer,
    factor_sizes: Sequence[int],
    *,
    seed: int = 12,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_threshold: float = 0.05,
) -> dict[str, float | int]:
    """FactorVAE score of a model on a ground-truth world (see the module docstring).

    Args:
      sample_factors: (rng, n) -> (n, K) integer factor classes, class k of factor j in
        0..factor_sizes[j]-1; rng is a np.random.Generator.
      render: (n, K) factors -> n observations.
      represent: batch_size observations -> (batch_size, D) codes; may be stochastic (e.g. a
        jitted model call with Echo noise).
      factor_sizes: number of classes of each factor.
      seed: seed of the generator that draws factors and voted factor indices.
      batch_size: observations per vote (and per represent() call), >= 2.
      num_train: training votes.
      num_eval: evaluation votes.
      num_variance_estimate: observations used for the global variances, >= 2.
      prune_threshold: dimensions with global standard deviation below this are inactive.

    Returns:
      {"train_accuracy": float, "eval_accuracy": float, "num_active_dims": int}; both accuracies
      are 0 when no dimension is active.
    """
    factor_sizes = tuple(int(size) for size in factor_sizes)
    if not factor_sizes or any(size < 1 for size in factor_sizes):
        raise ValueError(f"factor_sizes must be a non-empty list of positive integers; got {factor_sizes}.")
    batch_size = check_batch_size(batch_size, minimum=2)
    for name, value in (("num_train", num_train), ("num_eval", num_eval)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer number of votes; got {value!r}.")
    if int(num_variance_estimate) != num_variance_estimate or num_variance_estimate < 2:
        raise ValueError(f"num_variance_estimate must be an integer >= 2; got {num_variance_estimate!r}.")
    if not prune_threshold >= 0:
        raise ValueError(f"prune_threshold must be >= 0; got {prune_threshold!r}.")

    rng = np.random.default_rng(seed)
    num_batches = -(-int(num_variance_estimate) // batch_size)
    factors = check_sampled_factors(
        sample_factors(rng, num_batches * batch_size), num_batches * batch_size, factor_sizes
    )
    codes = represent_factors(render, represent, factors, batch_size)[:num_variance_estimate]
    global_variances = jnp.var(jnp.asarray(codes), axis=0, ddof=1)
    active = jnp.sqrt(global_variances) >= prune_threshold
    num_active = int(active.sum())
    if num_active == 0:
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}

    collect = functools.partial(
        _collect_votes,
        rng,
        sample_factors,
        render,
        represent,
        factor_sizes,
        batch_size,
        global_variances=global_variances,
        active=active,
    )
    train_votes = jnp.asarray(collect(num_votes=int(num_train)))
    classifier = jnp.argmax(train_votes, axis=0)
    eval_votes = jnp.asarray(collect(num_votes=int(num_eval)))
    return {
        "train_accuracy": float(_accuracy(train_votes, classifier)),
        "eval_accuracy": float(_accuracy(eval_votes, classifier)),
        "num_active_dims": num_active,
    }
