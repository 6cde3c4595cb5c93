"""MIG: agreement with an independent numpy/sklearn implementation, and the scores it must give."""

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from echo_jax import metrics

NUM_POINTS = 3000
FACTOR_SIZES = (3, 4, 5)


def reference_mig(codes, factors, num_bins=20):
    """disentanglement_lib's discrete MIG, written out with numpy and sklearn."""
    binned = np.stack(
        [np.digitize(codes[:, j], np.histogram(codes[:, j], num_bins)[1][:-1]) for j in range(codes.shape[1])], axis=1
    )
    mutual_info = np.array(
        [
            [mutual_info_score(factors[:, k], binned[:, j]) for k in range(factors.shape[1])]
            for j in range(codes.shape[1])
        ]
    )
    entropy = np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])
    ordered = np.sort(mutual_info, axis=0)
    return (ordered[-1] - ordered[-2]) / entropy


def sample_factors(rng, num_points=NUM_POINTS):
    return rng.integers(0, FACTOR_SIZES, size=(num_points, len(FACTOR_SIZES)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("code_kind", ["integer", "float32", "float64"])
def test_mig_equals_numpy_sklearn_reference(seed, code_kind):
    # Integer-valued codes put points exactly on bin edges, where only the reference's float64
    # edge arithmetic gives the reference bins; float codes mixed with the factors give MIGs
    # spread over (0, 1) rather than all near 0.
    rng = np.random.default_rng(seed)
    factors = sample_factors(rng)
    if code_kind == "integer":
        codes = rng.integers(0, 7, size=(NUM_POINTS, 6)) + np.concatenate(
            [factors, factors[:, :1] * 2, np.zeros((NUM_POINTS, 2), int)], axis=1
        )
        codes = codes.astype(np.float64)
    else:
        codes = rng.normal(size=(NUM_POINTS, 6)) + factors @ rng.normal(size=(3, 6))
        codes = codes.astype(code_kind)
    expected = reference_mig(codes, factors)
    result = metrics.mig(codes, factors)
    np.testing.assert_allclose(np.asarray(result["per_factor"]), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(float(result["mig"]), expected.mean(), atol=1e-6, rtol=0)
    assert 0.0 < expected.mean() < 1.0  # the case is not degenerate


def test_perfect_code_scores_one():
    # Each factor in its own dimension (an affine, order-reversing transform, dims permuted) plus a
    # noise dimension: I(z_k; y_k) = H(y_k) and the runner-up only carries the plug-in bias,
    # about (bins - 1)(classes - 1) / (2N) nats: at most 19 * 4 / 6000 / log 5 = 0.008 of H here.
    rng = np.random.default_rng(3)
    factors = sample_factors(rng)
    codes = np.concatenate([-2.5 * factors[:, [2, 0, 1]] + 7.0, rng.normal(size=(NUM_POINTS, 3))], axis=1)
    per_factor = np.asarray(metrics.mig(codes, factors)["per_factor"])
    assert np.all(per_factor > 0.98), per_factor


def test_zero_code_scores_zero():
    factors = sample_factors(np.random.default_rng(4))
    result = metrics.mig(np.zeros((NUM_POINTS, 6)), factors)
    np.testing.assert_array_equal(np.asarray(result["per_factor"]), 0.0)


def test_independent_noise_scores_about_zero():
    # Only the plug-in bias, about 19 * 4 / (2 * 3000) = 0.013 nats per pair, is left; the gap of
    # two such biases over H >= log 3 stays well below 0.02.
    rng = np.random.default_rng(5)
    factors = sample_factors(rng)
    result = metrics.mig(rng.normal(size=(NUM_POINTS, 6)), factors)
    assert float(result["mig"]) < 0.02


def test_duplicated_perfect_code_scores_zero():
    # Two identical informative dimensions per factor: the top two are equal, so the gap is 0.
    factors = sample_factors(np.random.default_rng(6))
    codes = np.concatenate([factors, factors], axis=1).astype(np.float32)
    np.testing.assert_allclose(np.asarray(metrics.mig(codes, factors)["per_factor"]), 0.0, atol=1e-6)


def test_mig_from_model_represents_whole_batches_and_matches_array_form():
    seen_batch_sizes = []

    def represent(images):
        seen_batch_sizes.append(images.shape[0])
        return images * 3.0

    render = lambda factors: factors.astype(np.float32)
    result = metrics.mig_from_model(sample_factors, render, represent, num_points=1000, batch_size=64, seed=7)
    assert set(seen_batch_sizes) == {64} and len(seen_batch_sizes) == 16  # ceil(1000 / 64)
    codes, factors = metrics.generate_codes(sample_factors, render, lambda x: x * 3.0, 1000, batch_size=64, seed=7)
    assert codes.shape == (1000, 3) and factors.shape == (1000, 3)
    np.testing.assert_allclose(np.asarray(result["per_factor"]), reference_mig(codes, factors), atol=1e-6)


@pytest.mark.parametrize(
    "codes, factors, message",
    [
        (np.zeros((10, 1)), np.zeros((10, 2), int), "at least 2 code dimension"),
        (np.zeros((10, 3)), np.ones((10, 2), int), "single value"),
        (np.zeros((10, 3)), np.zeros((9, 2), int), "9 rows"),
        (np.zeros((10, 3)), np.zeros((10, 2)), "integer class labels"),
        (np.full((10, 3), np.nan), np.arange(20).reshape(10, 2), "NaN"),
        (np.zeros(10), np.zeros((10, 2), int), "2-D"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(codes, factors, message):
    with pytest.raises(ValueError, match=message):
        metrics.mig(codes, factors)
