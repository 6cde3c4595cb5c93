"""Disentanglement metrics of trained dSprites models, computed the original's way.

The representation is the sampled code z by default (for Echo, its noise comes from the other 63 images
of each metric batch, as in the original), or the encoder mean. Ground truth is always the full,
independent dSprites factor distribution; for correlated dSprites, MIG is also computed on the held-out
(removed) factor combinations. FactorVAE is not: fixing one factor of a held-out combination leaves it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from echo_jax import metrics
from echo_jax.data import ArrayDataset, dsprites
from echo_jax.model import Autoencoder
from echo_jax.networks import cpu_compiler_options

REPRESENTATIONS = ("sample", "mean")


def render(factor_classes: np.ndarray) -> np.ndarray:
    """dSprites images (N, 64, 64, 1) for factor classes (N, 5)."""
    return dsprites.render(factor_classes)[..., None]


def make_represent(model: Autoencoder, params, key: jax.Array, representation: str = "sample") -> Callable:
    """``images -> codes`` (numpy), drawing fresh noise for every call."""
    if representation not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {representation!r}; choose sample or mean")

    @functools.partial(jax.jit, compiler_options=cpu_compiler_options())
    def encode(images, call_key):
        head = model.apply({"params": params}, images, rngs={"noise": call_key}, method=Autoencoder.encode)
        return head.z if representation == "sample" else head.mean

    calls = itertools.count()

    def represent(images: np.ndarray) -> np.ndarray:
        x = jnp.asarray(images, jnp.float32).reshape(-1, *model.image_shape)
        return np.asarray(encode(x, jax.random.fold_in(key, next(calls))))

    return represent


def heldout_sampler(dataset: ArrayDataset) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Samples factor classes uniformly among the combinations of `dataset` (e.g. the removed ones)."""
    classes = dataset.factor_classes
    return lambda rng, n: classes[rng.integers(len(classes), size=n)]


def evaluators(config) -> dict[str, Callable]:
    """The final evaluations a config's experiment asks for, for `echo_jax.train.train_and_evaluate`:
    ``{"disentanglement": (model, params, test_set) -> scores}`` for a disentanglement config (the held-out
    MIG on correlated dSprites' test split, whose factor combinations training never saw), else none."""
    if config.experiment != "disentanglement":
        return {}
    correlated = config.dataset == "dsprites_correlated"
    return {
        "disentanglement": lambda model, params, test_set: evaluate_model(
            model, params, config, test_set if correlated else None
        )
    }


def evaluate_model(model: Autoencoder, params, config, heldout: ArrayDataset | None = None) -> dict:
    """MIG and FactorVAE score of one model (and held-out MIG where given).

    Args:
      model: the autoencoder (dSprites image shape).
      params: its parameters.
      config: the experiment config (representation, batch_size, metric sample sizes, seed).
      heldout: a dataset whose factor combinations give a second MIG (correlated dSprites' test split).

    Returns:
      {"mig", "mig_per_factor", "factor_vae", "factor_vae_train", "active_dims"[, "heldout_mig",
      "heldout_mig_per_factor"]}.
    """
    represent = make_represent(model, params, jax.random.PRNGKey(config.seed + 7), config.representation)
    mig = metrics.mig_from_model(
        dsprites.sample_factors, render, represent, num_points=config.mig_points, batch_size=config.batch_size
    )
    factor_vae = metrics.factor_vae_score(
        dsprites.sample_factors,
        render,
        represent,
        dsprites.FACTOR_SIZES,
        batch_size=config.batch_size,
        num_train=config.factor_vae_train,
        num_eval=config.factor_vae_eval,
        num_variance_estimate=config.factor_vae_variance_points,
    )
    out = {
        "mig": float(mig["mig"]),
        "mig_per_factor": [float(v) for v in mig["per_factor"]],
        "factor_vae": float(factor_vae["eval_accuracy"]),
        "factor_vae_train": float(factor_vae["train_accuracy"]),
        "active_dims": int(factor_vae["num_active_dims"]),
    }
    if heldout is not None:
        held = metrics.mig_from_model(
            heldout_sampler(heldout), render, represent, num_points=config.mig_points, batch_size=config.batch_size
        )
        out["heldout_mig"] = float(held["mig"])
        out["heldout_mig_per_factor"] = [float(v) for v in held["per_factor"]]
    return out
