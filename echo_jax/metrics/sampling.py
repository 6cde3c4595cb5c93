"""Codes from a ground-truth world: a (factor sampler, render, represent) triple.

`sample_factors(rng, n) -> (n, K) int` draws factor classes with a `np.random.Generator`,
`render(factors) -> images` turns them into observations, and `represent(images) -> (n, D)` is the
model's representation. `represent` is always called on exactly `batch_size` observations, as the
original evaluated its models in batches of 64: for Echo noise the code of an image depends on the
other images of its batch, so the batch is part of the definition of the representation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

FactorSampler = Callable[[np.random.Generator, int], Any]
Renderer = Callable[[np.ndarray], Any]
Representer = Callable[[Any], Any]

# Observations rendered per render() call; bounds host memory for image-sized observations.
RENDER_CHUNK = 1024


def check_batch_size(batch_size: int, minimum: int = 1) -> int:
    """Returns batch_size as an int, or raises ValueError if it is not an integer >= minimum."""
    if int(batch_size) != batch_size or batch_size < minimum:
        raise ValueError(f"batch_size must be an integer >= {minimum}; got {batch_size!r}.")
    return int(batch_size)


def check_sampled_factors(factors: Any, num_points: int, factor_sizes: tuple[int, ...] | None = None) -> np.ndarray:
    """Checks the output of a factor sampler: (num_points, K) integers, within factor_sizes if given."""
    array = np.asarray(factors)
    if array.shape[:1] != (num_points,) or array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"sample_factors(rng, {num_points}) must return a ({num_points}, num_factors) integer "
            f"array of factor classes; got shape {array.shape}, dtype {array.dtype}."
        )
    if factor_sizes is not None:
        if array.shape[1] != len(factor_sizes):
            raise ValueError(
                f"sample_factors returns {array.shape[1]} factors but factor_sizes has "
                f"{len(factor_sizes)} entries; they must agree."
            )
        if np.any(array < 0) or np.any(array >= np.asarray(factor_sizes)):
            raise ValueError(f"sample_factors returned classes outside 0..size-1 for factor_sizes {factor_sizes}.")
    return array


def represent_factors(render: Renderer, represent: Representer, factors: np.ndarray, batch_size: int) -> np.ndarray:
    """Renders factor rows and represents them, `batch_size` observations per represent() call.

    Args:
      render: factors (n, K) -> n observations.
      represent: observations (batch_size, ...) -> (batch_size, D) codes.
      factors: (M * batch_size, K) factor classes; M whole batches.
      batch_size: observations per represent() call.

    Returns:
      (M * batch_size, D) float numpy codes, in the order of `factors`.
    """
    num_points = factors.shape[0]
    if num_points % batch_size:
        raise ValueError(f"{num_points} factor rows do not split into batches of {batch_size}.")
    render_chunk = max(batch_size, RENDER_CHUNK // batch_size * batch_size)
    codes = []
    for start in range(0, num_points, render_chunk):
        images = render(factors[start : start + render_chunk])
        for offset in range(0, min(render_chunk, num_points - start), batch_size):
            batch_codes = np.asarray(represent(images[offset : offset + batch_size]))
            if batch_codes.ndim != 2 or batch_codes.shape[0] != batch_size:
                raise ValueError(
                    f"represent must map {batch_size} observations to a ({batch_size}, D) array of "
                    f"codes; got shape {batch_codes.shape}."
                )
            codes.append(batch_codes)
    return np.concatenate(codes, axis=0)


def generate_codes(
    sample_factors: FactorSampler,
    render: Renderer,
    represent: Representer,
    num_points: int,
    *,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples factors, renders and represents them: the data every array-form metric takes.

    Whole batches are always represented: ceil(num_points / batch_size) batches are drawn and the
    first `num_points` rows kept, so `represent` never sees a short batch.

    Args:
      sample_factors: (rng, n) -> (n, K) integer factor classes.
      render: (n, K) factors -> n observations.
      represent: batch_size observations -> (batch_size, D) codes.
      num_points: number of (code, factor) rows to return.
      batch_size: observations per represent() call (64 in the original).
      seed: seed of the np.random.Generator that drives sample_factors.

    Returns:
      codes (num_points, D) float and factors (num_points, K) int, as numpy arrays.
    """
    batch_size = check_batch_size(batch_size)
    if int(num_points) != num_points or num_points < 2:
        raise ValueError(f"num_points must be an integer >= 2; got {num_points!r}.")
    num_batches = -(-int(num_points) // batch_size)
    rng = np.random.default_rng(seed)
    factors = check_sampled_factors(sample_factors(rng, num_batches * batch_size), num_batches * batch_size)
    codes = represent_factors(render, represent, factors, batch_size)
    return codes[:num_points], factors[:num_points]
