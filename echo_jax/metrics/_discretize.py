"""Histogram discretisation of codes, exactly as disentanglement_lib's `histogram_discretize`.

Each code dimension is cut into `num_bins` equal-width bins between its minimum and maximum with
``np.digitize(x, np.histogram(x, num_bins)[1][:-1])``. This step runs in numpy on the host on
purpose: numpy computes the bin edges in float64, and JAX's default float32 would move every point
that lies within one float32 ulp of an edge into the neighbouring bin, so the mutual information
would no longer agree with the reference. The step is O(N * D) and a small part of any metric's cost;
everything after it (counting, mutual information, scores) runs in jitted jnp.
"""

from __future__ import annotations

import numpy as np


def discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Bins each code dimension into `num_bins` equal-width histogram bins.

    Args:
      codes: (N, D) finite real array (already validated).
      num_bins: number of bins per dimension, >= 1.

    Returns:
      (N, D) int32 bin indices in 0..num_bins-1 (np.digitize's 1..num_bins, shifted by one). A
      constant dimension falls into a single bin, as with np.histogram's [x - 0.5, x + 0.5] range.
    """
    if int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer; got {num_bins!r}.")
    binned = np.empty(codes.shape, dtype=np.int32)
    for dim in range(codes.shape[1]):
        column = codes[:, dim]
        edges = np.histogram(column, int(num_bins))[1][:-1]
        binned[:, dim] = np.digitize(column, edges) - 1
    return binned
