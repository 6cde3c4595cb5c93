"""dSprites: procedural renderer against real frames, factor bookkeeping, correlated variant."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest

from echo_jax import data
from echo_jax.data import dsprites
from echo_jax.data.fetch import sha256_of_file

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SQUARE, ELLIPSE, HEART = 0, 1, 2


@pytest.fixture(scope="module")
def reference_frames() -> np.ndarray:
    """The 320 real frames of ../shared/data/dsprites/reference_frames.npy, as bool."""
    path = SHARED_DATA / "dsprites" / "reference_frames.npy"
    if not path.is_file():
        if os.environ.get("ECHO_JAX_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{path} is missing but ECHO_JAX_REQUIRE_SHARED_DATA=1 requires it.")
        pytest.skip(f"{path} is absent (a fresh clone); the fidelity test needs it.")
    return np.load(path) > 0


def reference_frame_factors() -> np.ndarray:
    """Factor classes of the reference frames, read by eye off the upstream gif's traversal.

    For each shape (heart, ellipse, square): scale up, down, up (orientation 0, position 0); a full
    turn (40 orientations) at scale 1; for the heart only, a loop around the border (down posY,
    along posX at the bottom, up posY, back along posX at the top); one frame at rest; scale down.
    The bounding boxes of the frames confirm each segment (e.g. frame 89 is centred on row 47.5).
    """
    rows = []
    up, down = list(range(6)), list(range(5, -1, -1))
    for shape in (HEART, ELLIPSE, SQUARE):
        rows += [(shape, scale, 0, 0, 0) for scale in up + down + up]
        rows += [(shape, 5, orientation, 0, 0) for orientation in range(40)]
        if shape == HEART:
            rows += [(shape, 5, 0, 0, y) for y in range(32)]
            rows += [(shape, 5, 0, x, 31) for x in range(32)]
            rows += [(shape, 5, 0, 31, y) for y in range(31, -1, -1)]
            rows += [(shape, 5, 0, x, 0) for x in range(31, -1, -1)]
        rows += [(shape, 5, 0, 0, 0)]
        rows += [(shape, scale, 0, 0, 0) for scale in range(4, -1, -1)]
    return np.array(rows)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(bool), b.astype(bool)
    return (a & b).sum(axis=(-2, -1)) / (a | b).sum(axis=(-2, -1))


def test_rendered_frames_match_the_real_ones(reference_frames):
    factors = reference_frame_factors()
    assert len(factors) == len(reference_frames) == 320
    scores = iou(dsprites.render(factors), reference_frames)
    per_shape = {name: scores[factors[:, 0] == shape].mean() for shape, name in enumerate(dsprites.SHAPE_NAMES)}
    # Measured: square 0.9997, ellipse 0.993, heart 0.963 (the heart's outline is approximated).
    assert per_shape["square"] > 0.995 and per_shape["ellipse"] > 0.985 and per_shape["heart"] > 0.95
    assert scores.min() > 0.9


def test_geometry_from_the_measured_constants():
    images = dsprites.render(np.array([[SQUARE, 5, 0, 0, 0], [SQUARE, 0, 0, 31, 0], [ELLIPSE, 5, 0, 0, 31]]))
    # Axis-aligned square at scale 1, centre (16, 16): pixels 6..25 in both directions.
    expected = np.zeros((64, 64), np.uint8)
    expected[6:26, 6:26] = 1
    np.testing.assert_array_equal(images[0], expected)
    # Scale 0.5 at posX = 1: centre column 48, 10 px wide.
    cols = np.nonzero(images[1].any(axis=0))[0]
    assert (cols.min() + cols.max() + 1) / 2 == 48 and len(cols) == 10
    # Ellipse at posY = 1: centre row 48, 25-26 px wide (semi-axis 12.8) and 14-15 tall (7.2).
    rows, cols = np.nonzero(images[2].any(axis=1))[0], np.nonzero(images[2].any(axis=0))[0]
    assert (rows.min() + rows.max() + 1) / 2 == 48 and len(cols) in (25, 26) and len(rows) in (14, 15)


def test_orientation_turns_counter_clockwise_and_wraps():
    turn = dsprites.render(np.array([[HEART, 5, k, 15, 15] for k in (0, 10, 39)]))
    # Index 10 is 92.3 degrees: close to a quarter turn counter-clockwise (np.rot90 k=1) on screen.
    assert iou(turn[1], np.rot90(turn[0], 1)) > 0.8 > iou(turn[1], np.rot90(turn[0], -1))
    np.testing.assert_array_equal(turn[0], turn[2])  # 2 pi = 0


def test_render_is_the_same_in_any_batch():
    rng = np.random.default_rng(3)
    factors = dsprites.sample_factors(rng, 300)
    factors[:40, :3] = factors[0, :3]  # a group of one sprite at many positions
    together = dsprites.render(factors)
    alone = np.stack([dsprites.render(row[None])[0] for row in factors[::7]])
    np.testing.assert_array_equal(together[::7], alone)
    assert together.dtype == np.uint8 and set(np.unique(together)) == {0, 1}


def test_factor_bookkeeping():
    assert dsprites.FACTOR_SIZES == (3, 6, 40, 32, 32) and dsprites.NUM_IMAGES == 737_280
    assert dsprites.FACTOR_NAMES == ("shape", "scale", "orientation", "posX", "posY")
    classes = dsprites.all_factor_classes()
    assert classes.shape == (737_280, 5)
    assert classes[1].tolist() == [0, 0, 0, 0, 1] and classes[32].tolist() == [0, 0, 0, 1, 0]
    assert classes[-1].tolist() == [2, 5, 39, 31, 31]
    np.testing.assert_array_equal(dsprites.factor_index(classes[::997]), np.arange(0, 737_280, 997))
    values = dsprites.factor_values(classes[[0, -1]])
    np.testing.assert_allclose(values, [[1.0, 0.5, 0.0, 0.0, 0.0], [3.0, 1.0, 2 * np.pi, 1.0, 1.0]])
    sampled = dsprites.sample_factors(np.random.default_rng(0), 20_000)
    assert sampled.min() == 0 and (sampled.max(axis=0) == np.array(dsprites.FACTOR_SIZES) - 1).all()


@pytest.mark.parametrize(
    "bad, message",
    [(np.zeros((2, 4), int), "shape"), (np.array([[3, 0, 0, 0, 0]]), "out of range"), (np.zeros((1, 5)), "integers")],
)
def test_render_rejects_bad_factors(bad, message):
    with pytest.raises(ValueError, match=message):
        dsprites.render(bad)


@pytest.mark.parametrize(
    "remove_prob, n_blocks, kept",
    [(0.15, 4, 124_800), (0.1, 4, 268_160), (0.2, 4, 43_520), (0.2, 8, 41_040), (0.15, 8, 104_960)],
)
def test_correlated_keep_counts_match_the_original(remove_prob, n_blocks, kept):
    # Counts recomputed from the original's sampler (legacy RandomState(42)) in the specification.
    assert dsprites.correlated_keep_mask(remove_prob, n_blocks, 42).sum() == kept


def test_correlated_dataset_splits(tmp_path):
    train = data.load("dsprites_correlated", "train", data_dir=tmp_path, remove_prob=0.2, n_blocks=8)
    keep = dsprites.correlated_keep_mask(0.2, 8, 42)
    assert len(train) == 41_040 and train.images.shape[1:] == (64, 64, 1) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.factor_classes, dsprites.all_factor_classes()[keep])
    np.testing.assert_array_equal(train.images[::4000, ..., 0], dsprites.render(train.factor_classes[::4000]))
    assert keep[dsprites.factor_index(train.factor_classes)].all() and (~keep).sum() == 737_280 - 41_040


def write_upstream_hdf5(path: Path, classes: np.ndarray) -> None:
    """A file in the upstream hdf5 layout (colour factor first), images from the renderer."""
    with h5py.File(path, "w") as archive:
        archive["imgs"] = dsprites.render(classes)
        archive["latents/classes"] = np.concatenate([np.zeros((len(classes), 1), int), classes], axis=1)


def test_upstream_file_reader_and_its_checks(tmp_path):
    classes = dsprites.sample_factors(np.random.default_rng(1), 50)
    write_upstream_hdf5(tmp_path / "small.hdf5", classes)
    images, read_classes = data.readers.read_dsprites_file(tmp_path / "small.hdf5")
    np.testing.assert_array_equal(read_classes, classes)
    np.testing.assert_array_equal(images, dsprites.render(classes))
    np.savez(tmp_path / "small.npz", imgs=images, latents_classes=np.pad(classes, ((0, 0), (1, 0))))
    np.testing.assert_array_equal(data.readers.read_dsprites_file(tmp_path / "small.npz")[1], classes)
    # A file in the data folder that is not the whole dataset is refused, not silently used.
    folder = tmp_path / "data" / "dsprites"
    folder.mkdir(parents=True)
    name = "dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"
    write_upstream_hdf5(tmp_path / "data" / name, classes)
    with pytest.raises(data.ChecksumMismatchError, match="hdf5 has sha256"):  # not the registered file
        data.load("dsprites", "train", data_dir=tmp_path / "data")
    # Even a file that passed its checksum is refused when it does not hold the whole dataset.
    digest = sha256_of_file(tmp_path / "data" / name)
    entry = data.registry.RemoteFile(data.registry.REGISTRY[name].url, digest)
    with mock.patch.dict(data.registry.REGISTRY, {name: entry}):
        with pytest.raises(data.DataFormatError, match="must hold all 737,280"):
            data.load("dsprites", "train", data_dir=tmp_path / "data")
