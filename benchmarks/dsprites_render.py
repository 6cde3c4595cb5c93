"""Time to render dSprites procedurally: the full 737,280 images, and images on demand.

    python benchmarks/dsprites_render.py [--repeats 3]

Rows: the full dataset in dataset order (`render_all`, 1,024 positions of one sprite at a time),
and 4,096 images from uniformly sampled factors (what the disentanglement metrics ask for: nearly
every image a different sprite), with the per-image cost of each and their ratio. Times are the
minimum over repeats (other processes may load the CPU).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from echo_jax.data import dsprites


def _best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU cores visible: {os.cpu_count()}")

    full = _best_time(dsprites.render_all, args.repeats)
    per_image_full = full / dsprites.NUM_IMAGES
    print(f"render_all: {dsprites.NUM_IMAGES:,} images in {full:.1f} s ({1 / per_image_full:,.0f} images/s)")

    factors = dsprites.sample_factors(np.random.default_rng(0), 4096)
    sampled = _best_time(lambda: dsprites.render(factors), args.repeats)
    per_image_sampled = sampled / len(factors)
    print(f"render(4,096 sampled factors): {sampled:.3f} s ({1 / per_image_sampled:,.0f} images/s)")
    print(f"per-image cost, sampled / full dataset: {per_image_sampled / per_image_full:.1f}x")


if __name__ == "__main__":
    main()
