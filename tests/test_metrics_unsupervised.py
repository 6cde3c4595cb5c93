"""Unsupervised scores: agreement with dlib's numpy/scipy formulas, and zero for a code whose
covariance is exactly diagonal."""

import itertools

import numpy as np
import pytest
import scipy.linalg
from sklearn.metrics import mutual_info_score

from echo_jax import metrics


def reference_scores(codes, num_bins=20):
    cov = np.cov(codes.T)
    total_correlation = 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])
    wasserstein = 2 * np.trace(cov) - 2 * np.trace(scipy.linalg.sqrtm(cov * np.diag(cov)[:, None]))
    binned = np.stack([np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in codes.T], axis=1)
    num_codes = codes.shape[1]
    pairwise = sum(
        mutual_info_score(binned[:, i], binned[:, j]) for i in range(num_codes) for j in range(num_codes) if i != j
    )
    return {
        "gaussian_total_correlation": total_correlation,
        "gaussian_wasserstein_correlation": np.real(wasserstein),
        "gaussian_wasserstein_correlation_norm": np.real(wasserstein) / np.trace(cov),
        "mutual_info_score": pairwise / (num_codes**2 - num_codes),
    }


def test_matches_dlib_formulas_on_correlated_codes():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(2000, 5)) @ rng.normal(size=(5, 5))
    result = metrics.unsupervised_scores(codes)
    for name, expected in reference_scores(codes).items():
        assert float(result[name]) == pytest.approx(expected, rel=1e-4, abs=1e-5), name
    assert reference_scores(codes)["gaussian_total_correlation"] > 0.5  # strongly correlated


def test_uncorrelated_code_scores_zero():
    # Centred factorial-grid coordinates have an exactly diagonal covariance, so the Gaussian and
    # the product of its marginals coincide (TC = W = 0), and on the full grid every pair of
    # dimensions is exactly independent, so the pairwise mutual information is 0 too.
    codes = np.array(list(itertools.product(range(3), range(4), range(5))), dtype=np.float64)
    result = metrics.unsupervised_scores(codes)
    for name in ("gaussian_total_correlation", "gaussian_wasserstein_correlation", "mutual_info_score"):
        assert abs(float(result[name])) < 1e-5, name


def test_constant_dimension_is_rejected():
    with pytest.raises(ValueError, match="constant"):
        metrics.unsupervised_scores(np.stack([np.arange(10.0), np.ones(10)], axis=1))
