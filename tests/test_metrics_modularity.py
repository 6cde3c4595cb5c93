"""Modularity and explicitness: agreement with dlib's numpy/sklearn procedure, and exact values
on a perfect code."""

import itertools

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score, roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer

from echo_jax import metrics


def make_data(seed, num_points=1500):
    rng = np.random.default_rng(seed)
    factors = rng.integers(0, (3, 4, 5), size=(num_points, 3))
    codes = factors @ np.array([[1.0, 0.2, 0.5], [0.0, 1.0, 0.3], [0.3, 0.0, 1.0]])
    return codes + rng.normal(size=(num_points, 3)), factors


def reference_modularity(codes, factors, num_bins=20):
    binned = np.stack([np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in codes.T], axis=1)
    mutual_info = np.array([[mutual_info_score(f, b) for f in factors.T] for b in binned.T])
    squared = mutual_info**2
    top = squared.max(axis=1)
    score = 1.0 - (squared.sum(axis=1) - top) / (top * (squared.shape[1] - 1.0))
    return np.mean(np.where(top == 0, 0.0, score))


def reference_explicitness(codes, factors, codes_test, factors_test):
    """dlib's explicitness_per_factor: sklearn LogisticRegression() and macro ROC-AUC."""
    mean, std = codes.mean(axis=0), codes.std(axis=0)
    train, test = [], []
    for k in range(factors.shape[1]):
        model = LogisticRegression().fit((codes - mean) / std, factors[:, k])
        binarizer = MultiLabelBinarizer()
        train.append(
            roc_auc_score(binarizer.fit_transform(factors[:, k : k + 1]), model.predict_proba((codes - mean) / std))
        )
        test.append(
            roc_auc_score(
                binarizer.fit_transform(factors_test[:, k : k + 1]), model.predict_proba((codes_test - mean) / std)
            )
        )
    return np.mean(train), np.mean(test)


def test_matches_dlib_procedure():
    # Modularity is the same computation (1e-5, float32); explicitness solves the same convex
    # problem with another L-BFGS, so it agrees to the solvers' tolerance (1e-3).
    codes, factors = make_data(0)
    codes_test, factors_test = make_data(1)
    result = metrics.modularity_explicitness(codes, factors, codes_test, factors_test)
    assert abs(float(result["modularity"]) - reference_modularity(codes, factors)) < 1e-5
    train, test = reference_explicitness(codes, factors, codes_test, factors_test)
    assert abs(float(result["explicitness_train"]) - train) < 1e-3
    assert abs(float(result["explicitness_test"]) - test) < 1e-3
    assert 0.6 < test < 0.99  # not a degenerate case


def test_perfect_code_on_a_factorial_grid_is_fully_modular():
    # On a full factorial grid a dimension equal to factor k shares exactly zero information with
    # the other factors, so each dimension's modularity is exactly 1.
    # 25 copies of the 60-point grid: the same shapes as above, so the jitted solver is reused.
    factors = np.tile(np.array(list(itertools.product(range(3), range(4), range(5)))), (25, 1))
    codes = factors.astype(np.float64) * 0.5
    result = metrics.modularity_explicitness(codes, factors, codes, factors)
    assert abs(float(result["modularity"]) - 1.0) < 1e-6
    assert float(result["explicitness_test"]) > 0.95
