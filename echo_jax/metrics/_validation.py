"""Input checks shared by the metrics: each raises before any work starts."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_codes(codes: Any, name: str = "codes", min_dims: int = 1) -> np.ndarray:
    """Returns `codes` as a finite (N, D) float numpy array, or raises a ValueError saying why not."""
    array = np.asarray(codes)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (num_points, num_code_dims); got shape {array.shape}. "
            "Reshape or stack the representations into one row per data point."
        )
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers; got dtype {array.dtype}.")
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 data points; got {array.shape[0]}.")
    if array.shape[1] < min_dims:
        raise ValueError(f"{name} needs at least {min_dims} code dimension(s) for this metric; got {array.shape[1]}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; check the model that produced the representation.")
    return array


def check_factors(factors: Any, num_points: int, name: str = "factors") -> np.ndarray:
    """Returns `factors` as an (N, K) integer numpy array with N == num_points, or raises ValueError."""
    array = np.asarray(factors)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (num_points, num_factors) of integer classes; got shape "
            f"{array.shape}. Use factors[:, None] for a single factor."
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer class labels; got dtype {array.dtype}. Pass factor indices "
            "(e.g. dSprites latents_classes), not continuous factor values."
        )
    if array.shape[0] != num_points:
        raise ValueError(
            f"{name} has {array.shape[0]} rows but the codes have {num_points}; they must describe the "
            "same data points, row by row."
        )
    if array.shape[1] < 1:
        raise ValueError(f"{name} needs at least one factor column.")
    return array


def check_train_test(
    codes: Any, factors: Any, codes_test: Any, factors_test: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checks a train and a test split of codes and factors, which must share their columns."""
    codes = check_codes(codes)
    factors = check_factors(factors, codes.shape[0])
    codes_test = check_codes(codes_test, "codes_test")
    factors_test = check_factors(factors_test, codes_test.shape[0], "factors_test")
    if codes_test.shape[1] != codes.shape[1] or factors_test.shape[1] != factors.shape[1]:
        raise ValueError(
            "codes_test/factors_test must have the same columns as codes/factors; got "
            f"{codes_test.shape[1]}/{factors_test.shape[1]} vs {codes.shape[1]}/{factors.shape[1]}."
        )
    return codes, factors, codes_test, factors_test


def relabel(labels: np.ndarray, classes_from: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Maps each column of integer labels onto 0..C-1, as sklearn's label handling does.

    Args:
        labels: (N, K) integer labels.
        classes_from: optional (M, K) labels whose classes define the mapping (e.g. the training
            set); labels of `labels` not seen there become -1.

    Returns:
        The (N, K) int32 relabelled array and C, the largest number of classes over the columns.
    """
    source = labels if classes_from is None else classes_from
    out = np.empty(labels.shape, dtype=np.int32)
    num_classes = 1
    for k in range(labels.shape[1]):
        classes = np.unique(source[:, k])
        num_classes = max(num_classes, classes.size)
        position = np.clip(np.searchsorted(classes, labels[:, k]), 0, classes.size - 1)
        out[:, k] = np.where(classes[position] == labels[:, k], position, -1)
    return out, num_classes
