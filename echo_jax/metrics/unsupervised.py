"""Unsupervised scores of a code, as disentanglement_lib's `unsupervised_metrics`.

* Gaussian total correlation: KL between the Gaussian with the codes' covariance and the
  product of its marginals, 0.5 * (sum log diag(C) - log det C).
* Gaussian Wasserstein correlation: squared 2-Wasserstein distance between the same two
  Gaussians, 2 tr C - 2 tr sqrtm(diag(C) C), and that divided by tr C. dlib calls
  scipy.linalg.sqrtm; here tr sqrtm(diag(C) C) is the sum of square roots of the eigenvalues of
  the symmetric diag(C)^1/2 C diag(C)^1/2 (a similar matrix), which is the same number.
* Mean pairwise mutual information: the off-diagonal mean of the discrete mutual information
  between histogram-binned code dimensions (dlib bins with 20; the Echo original used 50).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from echo_jax.metrics import _validation
from echo_jax.metrics._discretize import discretize
from echo_jax.metrics._information import discrete_mutual_info


@jax.jit
def gaussian_total_correlation(cov: jax.Array) -> jax.Array:
    """Total correlation (nats) of a zero-mean Gaussian with covariance `cov` (D, D)."""
    return 0.5 * (jnp.log(jnp.diag(cov)).sum() - jnp.linalg.slogdet(cov)[1])


@jax.jit
def gaussian_wasserstein_correlation(cov: jax.Array) -> jax.Array:
    """Squared 2-Wasserstein distance between N(0, cov) and N(0, diag(cov))."""
    root_diag = jnp.sqrt(jnp.diag(cov))
    symmetric = root_diag[:, None] * cov * root_diag[None, :]
    trace_sqrt = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(symmetric), 0.0)).sum()
    return 2.0 * jnp.trace(cov) - 2.0 * trace_sqrt


@functools.partial(jax.jit, static_argnames=("num_bins",))
def _mean_pairwise_mutual_info(code_bins: jax.Array, num_bins: int) -> jax.Array:
    mutual_info = discrete_mutual_info(code_bins, code_bins, num_bins, num_bins)
    num_codes = mutual_info.shape[0]
    off_diagonal = mutual_info * (1.0 - jnp.eye(num_codes))
    return off_diagonal.sum() / (num_codes**2 - num_codes)


def unsupervised_scores(codes: Any, *, num_bins: int = 20) -> dict[str, jax.Array]:
    """Covariance- and information-based scores of a code, no factors needed.

    Args:
      codes: (N, D) real codes, D >= 2, every dimension non-constant (the Gaussian scores take
        logs of the variances).
      num_bins: histogram bins per code dimension for the mutual information.

    Returns:
      {"gaussian_total_correlation", "gaussian_wasserstein_correlation",
        "gaussian_wasserstein_correlation_norm", "mutual_info_score"} as scalars.
    """
    codes = _validation.check_codes(codes, min_dims=2)
    constant = [j for j in range(codes.shape[1]) if codes[:, j].min() == codes[:, j].max()]
    if constant:
        raise ValueError(
            f"code dimension(s) {constant} are constant: the Gaussian scores take the log "
            "of each variance. Drop collapsed dimensions before scoring."
        )
    cov = jnp.cov(jnp.asarray(codes, jnp.float32), rowvar=False)
    wasserstein = gaussian_wasserstein_correlation(cov)
    return {
        "gaussian_total_correlation": gaussian_total_correlation(cov),
        "gaussian_wasserstein_correlation": wasserstein,
        "gaussian_wasserstein_correlation_norm": wasserstein / jnp.trace(cov),
        "mutual_info_score": _mean_pairwise_mutual_info(jnp.asarray(discretize(codes, num_bins)), int(num_bins)),
    }
