"""DCI with the Lasso importance model: weights equal sklearn's Lasso, D and C equal the dlib
formulas, and a perfect code on a full factorial grid scores exactly as theory says."""

import itertools

import numpy as np
import pytest
import scipy.stats
from sklearn.linear_model import Lasso

from echo_jax import metrics


def factorial_grid(repeats=4):
    """Every combination of (3, 4, 5) classes, repeated: factors exactly uncorrelated."""
    grid = np.array(list(itertools.product(range(3), range(4), range(5))))
    return np.tile(grid, (repeats, 1))


def standardise(values):
    return (values - values.mean(axis=0)) / values.std(axis=0)


def dlib_disentanglement_completeness(importance):
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
    return (
        np.sum(per_code * importance.sum(axis=1) / importance.sum()),
        np.sum(per_factor * importance.sum(axis=0) / importance.sum()),
    )


def test_importance_equals_sklearn_lasso_and_scores_equal_dlib_formulas():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, (3, 4, 5), size=(800, 3))
    codes = factors @ rng.normal(size=(3, 6)) + rng.normal(size=(800, 6))
    result = metrics.dci(codes, factors, codes, factors, l1_penalty=0.05)
    expected = np.abs(
        np.stack(
            [
                Lasso(alpha=0.05, tol=1e-10, max_iter=100_000).fit(standardise(codes), target).coef_
                for target in standardise(factors).T
            ],
            axis=1,
        )
    )
    importance = np.asarray(result["importance_matrix"])
    np.testing.assert_allclose(importance, expected, atol=1e-4)
    disentanglement, completeness = dlib_disentanglement_completeness(importance.astype(np.float64))
    assert float(result["disentanglement"]) == pytest.approx(disentanglement, abs=1e-5)
    assert float(result["completeness"]) == pytest.approx(completeness, abs=1e-5)
    assert float(result["nrmse_train"]) == pytest.approx(float(result["nrmse_test"]), abs=1e-6)


def test_perfect_code_on_a_factorial_grid():
    # Standardised code = standardised factors and the factors are exactly uncorrelated, so the
    # Lasso weights are (1 - l1_penalty) * identity: D = C = 1 and the prediction error is
    # exactly l1_penalty (times the unit standard deviation of the target).
    factors = factorial_grid()
    codes = 2.0 * factors[:, [0, 1, 2]] - 1.0
    result = metrics.dci(codes, factors, codes, factors, l1_penalty=0.02)
    np.testing.assert_allclose(np.asarray(result["importance_matrix"]), 0.98 * np.eye(3), atol=1e-5)
    assert float(result["disentanglement"]) == pytest.approx(1.0, abs=1e-6)
    assert float(result["completeness"]) == pytest.approx(1.0, abs=1e-6)
    assert float(result["nrmse_train"]) == pytest.approx(0.02, abs=1e-5)


def test_rotated_code_is_less_disentangled():
    # Mixing two factors into two dims at 45 degrees spreads each dim's importance over both
    # factors: disentanglement drops well below the perfect code's 1.
    factors = factorial_grid()
    scaled = standardise(factors.astype(np.float64))
    codes = np.stack([scaled[:, 0] + scaled[:, 1], scaled[:, 0] - scaled[:, 1], scaled[:, 2]], axis=1)
    result = metrics.dci(codes, factors, codes, factors)
    assert float(result["disentanglement"]) < 0.75
    assert float(result["nrmse_train"]) < 0.05  # still fully informative


def test_dci_rejects_a_single_factor():
    with pytest.raises(ValueError, match="at least 2 factors"):
        metrics.dci(np.ones((10, 3)), np.ones((10, 1), int), np.ones((10, 3)), np.ones((10, 1), int))
