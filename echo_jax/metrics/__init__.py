"""Disentanglement metrics in jnp (disentanglement_lib definitions; departures documented per module).

Array forms take codes (N, D) and integer factor classes (N, K); `generate_codes` produces them
from a (factor sampler, render, represent) triple. `factor_vae_score` and `mig_from_model` take the
triple directly.
"""

from echo_jax.metrics.dci import dci
from echo_jax.metrics.factor_vae import factor_vae_score
from echo_jax.metrics.mig import mig, mig_from_model
from echo_jax.metrics.modularity import modularity_explicitness
from echo_jax.metrics.sampling import generate_codes
from echo_jax.metrics.sap import sap
from echo_jax.metrics.unsupervised import (
    gaussian_total_correlation,
    gaussian_wasserstein_correlation,
    unsupervised_scores,
)

__all__ = [
    "dci",
    "factor_vae_score",
    "gaussian_total_correlation",
    "gaussian_wasserstein_correlation",
    "generate_codes",
    "mig",
    "mig_from_model",
    "modularity_explicitness",
    "sap",
    "unsupervised_scores",
]
