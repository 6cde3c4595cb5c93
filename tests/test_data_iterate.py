"""Batch iterator: full batches, per-epoch shuffles, exact resumption, dynamic binarization."""

from __future__ import annotations

import numpy as np
import pytest

from echo_jax import data


def indexed_dataset(n: int = 103, binarize: str = "none") -> data.ArrayDataset:
    """Image i is filled with i / n, so a served batch tells which examples it holds."""
    images = np.broadcast_to((np.arange(n, dtype=np.float32) / n)[:, None, None, None], (n, 2, 3, 1)).copy()
    return data.ArrayDataset("indexed", "train", images, np.arange(n), binarize)


def served_indices(batch: np.ndarray, n: int) -> np.ndarray:
    return np.rint(batch[:, 0, 0, 0] * n).astype(int)


def test_full_batches_visit_each_example_at_most_once():
    dataset = indexed_dataset()
    served = list(data.batches(dataset, 10, seed=1, epoch=0))
    assert data.num_batches(dataset, 10) == 10 == len(served)
    assert all(batch.shape == (10, 2, 3, 1) and batch.dtype == np.float32 for batch in served)
    seen = np.concatenate([served_indices(batch, 103) for batch in served])
    assert len(np.unique(seen)) == 100  # 3 dropped, none repeated


def test_shuffle_depends_on_seed_and_epoch_only():
    dataset = indexed_dataset()
    first = np.concatenate(list(data.batches(dataset, 10, seed=1, epoch=0)))
    again = np.concatenate(list(data.batches(dataset, 10, seed=1, epoch=0)))
    next_epoch = np.concatenate(list(data.batches(dataset, 10, seed=1, epoch=1)))
    other_seed = np.concatenate(list(data.batches(dataset, 10, seed=2, epoch=0)))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, next_epoch) and not np.array_equal(first, other_seed)
    # Shuffled, not in storage order.
    assert not np.array_equal(served_indices(first, 103), np.arange(100))


def test_dynamic_binarization_is_a_fresh_reproducible_draw():
    grey = np.full((400, 4, 4, 1), 0.3, np.float32)
    grey[:200] = 0.0
    grey[:100] = 1.0
    dataset = data.ArrayDataset("grey", "train", grey, None, "dynamic")
    epoch = list(data.batches(dataset, 100, seed=5, epoch=2))
    stacked = np.concatenate(epoch)
    assert set(np.unique(stacked)) == {0.0, 1.0}
    # Certain pixels stay certain; 0.3 pixels are on 30% of the time (3,200 draws: sd 0.008).
    order = data.epoch_permutation(400, seed=5, epoch=2)
    served_grey = grey[order, 0, 0, 0]
    np.testing.assert_array_equal(stacked[served_grey == 1.0], 1.0)
    np.testing.assert_array_equal(stacked[served_grey == 0.0], 0.0)
    assert abs(stacked[served_grey == 0.3].mean() - 0.3) < 0.03
    # Two epochs give different draws; resuming at step 2 reproduces the tail exactly.
    other = np.concatenate(list(data.batches(dataset, 100, seed=5, epoch=3)))
    assert not np.array_equal(stacked, other)
    resumed = list(data.batches(dataset, 100, seed=5, epoch=2, start_step=2))
    assert len(resumed) == 2
    for a, b in zip(resumed, epoch[2:]):
        np.testing.assert_array_equal(a, b)


def test_eval_batches_are_a_fixed_shuffle_and_repeatable():
    dataset = indexed_dataset()
    batches = list(data.eval_batches(dataset, 25))
    assert len(batches) == 4
    served = np.concatenate([served_indices(b, 103) for b in batches])
    assert len(set(served.tolist())) == 100 and set(served.tolist()) <= set(range(103))
    # Shuffled: a test set sorted by class must not give single-class batches (Echo noise would then
    # come from the same class); the order is the same on every call.
    assert not np.array_equal(served, np.sort(served))
    again = np.concatenate([served_indices(b, 103) for b in data.eval_batches(dataset, 25)])
    np.testing.assert_array_equal(served, again)
    dynamic = data.ArrayDataset("grey", "test", np.full((60, 2, 2, 1), 0.5, np.float32), None, "dynamic")
    first, second = list(data.eval_batches(dynamic, 30)), list(data.eval_batches(dynamic, 30))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])


def test_uint8_dsprites_batches_are_float32():
    images = np.zeros((8, 64, 64, 1), np.uint8)
    images[::2] = 1
    dataset = data.ArrayDataset("dsprites", "train", images, None, "none")
    batch = next(data.batches(dataset, 8, seed=0, epoch=0))
    assert batch.dtype == np.float32 and batch.sum() == 4 * 64 * 64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 200}, "exceeds the 103 images"),
        ({"batch_size": 0}, "positive integer"),
        ({"batch_size": 10, "start_step": 11}, "past the 10 batches"),
        ({"batch_size": 10, "seed": -1}, "seed must be a non-negative"),
    ],
)
def test_bad_arguments_fail_before_any_batch(kwargs, message):
    arguments = {"seed": 0, "epoch": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        data.batches(indexed_dataset(), **arguments)
