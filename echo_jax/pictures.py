"""Pictures of a trained model: reconstructions, samples, rates per dimension and latent traversals.

`write_pictures` writes them for one `echo_jax.trained.TrainedModel`; every finished run calls it per model.
Image grids are written with Pillow at a fixed size (each image scaled by `SCALE`, `PAD` pixels between
them), plots with matplotlib.
"""

from __future__ import annotations

import io
import os

import jax
import numpy as np

from echo_jax.files import write_atomic

SCALE = 2  # pixels per image pixel in the grids
PAD = 2  # pixels between the images of a grid
GRID_COLUMNS = 10
TRAVERSAL_STEPS = 9


def image_grid(rows: list[np.ndarray], *, scale: int = SCALE, pad: int = PAD) -> np.ndarray:
    """(H', W') uint8 grey image of rows of images, each row (n, H, W, C) in [0, 1] (C = 1, or its mean)."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    cell_h, cell_w = h * scale + pad, w * scale + pad
    grid = np.full((len(rows) * cell_h + pad, n * cell_w + pad), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(np.asarray(row)):
            grey = image.mean(axis=-1) if image.ndim == 3 else image
            pixels = np.kron(np.clip(grey, 0, 1), np.ones((scale, scale)))
            top, left = pad + i * cell_h, pad + j * cell_w
            grid[top : top + h * scale, left : left + w * scale] = np.round(255 * (1 - pixels)).astype(np.uint8)
    return grid


def grid_size(num_rows: int, num_columns: int, image_shape, *, scale: int = SCALE, pad: int = PAD) -> tuple:
    """(width, height) in pixels of an `image_grid` of that many rows and columns."""
    h, w = image_shape[:2]
    return num_columns * (w * scale + pad) + pad, num_rows * (h * scale + pad) + pad


def _write_png(path: str, grid: np.ndarray) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def write_reconstructions(trained, images: np.ndarray, key: jax.Array, path: str) -> None:
    """Test images (rows 1 and 3) above their reconstructions (rows 2 and 4), `GRID_COLUMNS` a row."""
    images = np.asarray(images[: 2 * GRID_COLUMNS])
    recon = np.asarray(trained.reconstruct(images, key))
    rows = []
    for start in range(0, len(images), GRID_COLUMNS):
        rows += [images[start : start + GRID_COLUMNS], recon[start : start + GRID_COLUMNS]]
    _write_png(path, image_grid(rows))


def write_samples(trained, key: jax.Array, path: str, *, rows: int = 6) -> None:
    """`rows` x `GRID_COLUMNS` samples of the model (see `TrainedModel.sample`)."""
    samples = np.asarray(trained.sample(rows * GRID_COLUMNS, key))
    _write_png(path, image_grid([samples[r * GRID_COLUMNS : (r + 1) * GRID_COLUMNS] for r in range(rows)]))


def write_traversal(trained, image: np.ndarray, key: jax.Array, path: str) -> None:
    """One row per latent dimension: the code of `image` with that dimension swept over the 2nd to 98th
    percentile of the model's codes of the reference batch (its marginal spread), `TRAVERSAL_STEPS` values."""
    base = np.asarray(trained.encode(np.asarray(image)[None], key).location)[0]
    codes = np.asarray(trained.encode(trained.reference_images, key).z)
    low, high = np.percentile(codes, 2, axis=0), np.percentile(codes, 98, axis=0)
    rows = []
    for j in range(base.shape[0]):
        z = np.repeat(base[None], TRAVERSAL_STEPS, axis=0)
        z[:, j] = np.linspace(low[j], high[j], TRAVERSAL_STEPS)
        rows.append(np.asarray(jax.nn.sigmoid(trained.decode(z))))
    _write_png(path, image_grid(rows))


def write_rates_per_dim(rates, path: str, *, floor: float | None = None, title: str = "") -> None:
    """Bars of the rate per latent dimension, sorted high to low; Echo's per-dimension floor -log c as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = np.sort(np.asarray(rates))[::-1]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.bar(np.arange(len(rates)), rates, color="tab:blue")
    if floor is not None:
        ax.axhline(floor, color="tab:red", lw=1.2, label=f"floor -log c = {floor:.3f} nats")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("latent dimension (sorted by rate)")
    ax.set_ylabel("rate (nats)")
    ax.set_title(title or f"rate per dimension: {rates.sum():.1f} nats in all", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def write_pictures(trained, images: np.ndarray, out_dir: str, key: jax.Array) -> list[str]:
    """Writes ``reconstructions.png``, ``samples.png``, ``rates_per_dim.png`` (where the rate decomposes over
    dimensions) and, for dSprites models, ``traversal.png`` into `out_dir`; returns their paths.

    Args:
      trained: a `echo_jax.trained.TrainedModel`.
      images: test images (N, H, W, C) in [0, 1]; the first 20 are reconstructed, all are used for the rates.
      out_dir: created if missing.
      key: PRNG key.
    """
    from echo_jax import diagnostics

    os.makedirs(out_dir, exist_ok=True)
    k_recon, k_sample, k_rate, k_trav = jax.random.split(key, 4)
    paths = [os.path.join(out_dir, name) for name in ("reconstructions.png", "samples.png")]
    write_reconstructions(trained, images, k_recon, paths[0])
    write_samples(trained, k_sample, paths[1])
    try:
        rates = trained.rate_per_dim(images[:2000], key=k_rate)
    except ValueError:
        rates = None
    if rates is not None:
        floor = None
        if trained.model.encoder == "echo":
            floor = diagnostics.echo_floor(trained.model.echo_clip)
        paths.append(os.path.join(out_dir, "rates_per_dim.png"))
        title = f"{trained.model.encoder} beta={trained.beta:g} seed={trained.seed}: {np.sum(rates):.1f} nats"
        write_rates_per_dim(rates, paths[-1], floor=floor, title=title)
    if trained.config.dataset.startswith("dsprites"):
        paths.append(os.path.join(out_dir, "traversal.png"))
        write_traversal(trained, images[0], k_trav, paths[-1])
    return paths
