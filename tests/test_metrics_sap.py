"""SAP: the continuous score equals dlib's numpy formula; the discrete score equals a plain numpy
nearest-class-mean implementation; perfect and noise codes score as they must."""

import numpy as np
import pytest

from echo_jax import metrics

FACTOR_SIZES = (3, 4, 5)


def make_data(seed, num_points=600, noise=1.0):
    rng = np.random.default_rng(seed)
    factors = rng.integers(0, FACTOR_SIZES, size=(num_points, 3))
    codes = factors @ rng.normal(size=(3, 5)) + noise * rng.normal(size=(num_points, 5))
    return codes, factors


def reference_continuous_scores(codes, factors):
    """dlib's _compute_score_matrix with continuous_factors=True."""
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for j in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            cov = np.cov(codes[:, j], factors[:, k], ddof=1)
            scores[j, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
    return scores


def reference_nearest_mean_accuracy(codes, factors, codes_test, factors_test):
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for j in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            classes = np.unique(factors[:, k])
            means = np.array([codes[factors[:, k] == c, j].mean() for c in classes])
            predicted = classes[np.argmin(np.abs(codes_test[:, j, None] - means[None]), axis=1)]
            scores[j, k] = np.mean(predicted == factors_test[:, k])
    return scores


def top_two_gap(scores):
    ordered = np.sort(scores, axis=0)
    return ordered[-1] - ordered[-2]


def test_continuous_sap_equals_dlib_formula():
    codes, factors = make_data(0)
    codes[:, 4] = 2.0  # a constant dimension scores 0, as in dlib
    result = metrics.sap(codes, factors, continuous_factors=True)
    expected = reference_continuous_scores(codes, factors)
    np.testing.assert_allclose(np.asarray(result["score_matrix"]), expected, atol=1e-5)
    np.testing.assert_allclose(float(result["sap"]), top_two_gap(expected).mean(), atol=1e-5)


def test_discrete_sap_equals_numpy_nearest_class_mean():
    codes, factors = make_data(1)
    codes_test, factors_test = make_data(2)
    result = metrics.sap(codes, factors, codes_test, factors_test)
    expected = reference_nearest_mean_accuracy(codes, factors, codes_test, factors_test)
    np.testing.assert_allclose(np.asarray(result["score_matrix"]), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(result["per_factor"]), top_two_gap(expected), atol=1e-6)


def test_perfect_code_is_predicted_exactly_and_noise_code_scores_about_zero():
    # A code equal to the factors classifies its own factor perfectly (score 1); a pure-noise code
    # predicts every factor at chance from every dim, so the top-two gaps are sampling noise only.
    _, factors = make_data(3)
    _, factors_test = make_data(4)
    perfect = metrics.sap(factors * 1.5, factors, factors_test * 1.5, factors_test)
    np.testing.assert_allclose(np.diag(np.asarray(perfect["score_matrix"])), 1.0)
    assert float(perfect["sap"]) > 0.5  # 1 minus a chance-level runner-up (<= 1/3 + noise)
    rng = np.random.default_rng(5)
    noise = metrics.sap(rng.normal(size=(600, 5)), factors, rng.normal(size=(600, 5)), factors_test)
    assert float(noise["sap"]) < 0.06


def test_discrete_sap_needs_test_points():
    codes, factors = make_data(6)
    with pytest.raises(ValueError, match="codes_test and factors_test"):
        metrics.sap(codes, factors)
