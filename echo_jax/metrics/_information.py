"""Discrete mutual information and entropy in jnp, in nats, as sklearn's `mutual_info_score`.

Joint counts come from a single `bincount` over all (column of x, column of y) pairs at once, so the
(A, B) matrix of mutual informations costs one scatter over N * A * B indices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def joint_counts(x: jax.Array, y: jax.Array, num_x: int, num_y: int) -> jax.Array:
    """Contingency tables of every column of x against every column of y.

    Args:
      x: (N, A) integer labels in 0..num_x-1.
      y: (N, B) integer labels in 0..num_y-1.
      num_x: number of label values of x (static).
      num_y: number of label values of y (static).

    Returns:
      (A, B, num_x, num_y) int32 counts.
    """
    num_a, num_b = x.shape[1], y.shape[1]
    table = num_x * num_y
    pair_offset = (jnp.arange(num_a)[:, None] * num_b + jnp.arange(num_b)[None, :]) * table
    flat = pair_offset[None] + x[:, :, None] * num_y + y[:, None, :]
    counts = jnp.bincount(flat.reshape(-1), length=num_a * num_b * table)
    return counts.reshape(num_a, num_b, num_x, num_y)


def mutual_info_from_counts(counts: jax.Array) -> jax.Array:
    """Plug-in mutual information (nats) of contingency tables (..., num_x, num_y).

    Computes sum_ij p_ij log(p_ij / (p_i p_j)) over the non-empty cells, each log as
    log n_ij + log N - log n_i - log n_j so that float32 keeps the counts exact, and clips at 0 as
    sklearn does.
    """
    counts = counts.astype(jnp.float32)
    total = counts.sum(axis=(-2, -1), keepdims=True)
    row = counts.sum(axis=-1, keepdims=True)
    col = counts.sum(axis=-2, keepdims=True)
    occupied = counts > 0
    safe = lambda a: jnp.where(occupied, a, 1.0)  # empty cells contribute 0; keep logs finite
    log_ratio = jnp.log(safe(counts)) + jnp.log(total) - jnp.log(safe(row)) - jnp.log(safe(col))
    terms = jnp.where(occupied, counts * log_ratio, 0.0)
    return jnp.maximum(terms.sum(axis=(-2, -1)) / total[..., 0, 0], 0.0)


@functools.partial(jax.jit, static_argnames=("num_x", "num_y"))
def discrete_mutual_info(x: jax.Array, y: jax.Array, num_x: int, num_y: int) -> jax.Array:
    """(A, B) matrix of mutual informations (nats) between the columns of x and of y."""
    return mutual_info_from_counts(joint_counts(x, y, num_x, num_y))


@functools.partial(jax.jit, static_argnames=("num_classes",))
def discrete_entropy(labels: jax.Array, num_classes: int) -> jax.Array:
    """(K,) plug-in entropies (nats) of the columns of (N, K) labels in 0..num_classes-1."""
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # (N, K, C)
    counts = one_hot.sum(axis=0)
    total = labels.shape[0]
    terms = jnp.where(counts > 0, counts * (jnp.log(total) - jnp.log(jnp.maximum(counts, 1.0))), 0.0)
    return terms.sum(axis=-1) / total
