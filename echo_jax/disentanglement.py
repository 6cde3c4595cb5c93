"""Disentanglement metrics of trained dSprites models, computed the original's way.

`config.metrics` chooses them (`METRICS`; unset: MIG and the FactorVAE score, the original's two):

* ``mig``: Mutual Information Gap on `config.mig_points` codes;
* ``factor_vae``: the FactorVAE score (majority-vote classifier, `config.factor_vae_*` votes and points);
* ``dci``: disentanglement, completeness and informativeness (Lasso importance; nrmse: lower is better);
* ``sap``: Separated Attribute Predictability;
* ``modularity``: modularity and explicitness (train and test ROC-AUC);
* ``unsupervised``: Gaussian total and Wasserstein correlation, mean pairwise mutual information (no factors).

dci, sap, modularity and unsupervised score the `config.mig_points` codes MIG scores (sampled with the same
seed) and, for the three with a test split, `config.mig_points // 2` more (disentanglement_lib: 10,000 and
5,000). `echo_jax.metrics` documents each metric's departures from disentanglement_lib.

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

from echo_jax import metrics, report
from echo_jax.data import ArrayDataset, dsprites
from echo_jax.defaults import DEFAULT_METRICS, METRICS  # noqa: F401 - declared with the config's fields
from echo_jax.model import Autoencoder
from echo_jax.networks import cpu_compiler_options
from echo_jax.validation import selected_metrics  # checked with the rest of the config, before jax is imported

REPRESENTATIONS = ("sample", "mean")
# The scalar scores each metric writes into a model's "disentanglement" entry, in the order tables show them.
SCORES = {
    "mig": ("mig", "heldout_mig"),
    "factor_vae": ("factor_vae", "factor_vae_train", "active_dims"),
    "dci": ("dci_disentanglement", "dci_completeness", "dci_nrmse_train", "dci_nrmse_test"),
    "sap": ("sap",),
    "modularity": ("modularity", "explicitness_train", "explicitness_test"),
    "unsupervised": (
        "gaussian_total_correlation",
        "gaussian_wasserstein_correlation",
        "gaussian_wasserstein_correlation_norm",
        "mutual_info_score",
    ),
}


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
    selected_metrics(config)  # a bad metric name fails here, before training
    correlated = config.dataset == "dsprites_correlated"
    return {
        "disentanglement": lambda model, params, test_set: evaluate_model(
            model, params, config, test_set if correlated else None
        )
    }


def evaluate_model(model: Autoencoder, params, config, heldout: ArrayDataset | None = None) -> dict:
    """The metrics `config.metrics` selects (see `selected_metrics`) of one model.

    The representation draws its noise from one stream whose draws follow the order below (MIG's codes, the
    FactorVAE votes, the test codes, the held-out MIG), so a metric's score does not depend on which metrics
    come after it.

    Args:
      model: the autoencoder (dSprites image shape).
      params: its parameters.
      config: the experiment config (metrics, representation, batch_size, metric sample sizes, seed).
      heldout: a dataset whose factor combinations give a second MIG (correlated dSprites' test split).

    Returns:
      Floats (lists for per-factor values) by name: ``mig``, ``mig_per_factor`` (and ``heldout_mig``,
      ``heldout_mig_per_factor`` with `heldout`); ``factor_vae``, ``factor_vae_train``, ``active_dims``;
      ``dci_disentanglement``, ``dci_completeness``, ``dci_nrmse_train``, ``dci_nrmse_test``; ``sap``,
      ``sap_per_factor``; ``modularity``, ``explicitness_train``, ``explicitness_test``;
      ``gaussian_total_correlation``, ``gaussian_wasserstein_correlation``,
      ``gaussian_wasserstein_correlation_norm``, ``mutual_info_score`` (None when fewer than two code
      dimensions vary) - those of the selected metrics.
    """
    selected = selected_metrics(config)
    represent = make_represent(model, params, jax.random.PRNGKey(config.seed + 7), config.representation)
    sample = functools.partial(metrics.generate_codes, dsprites.sample_factors, render, represent)
    out = {}
    codes = factors = None
    if set(selected) - {"factor_vae"}:  # the same points as metrics.mig_from_model's (seed 0)
        codes, factors = sample(config.mig_points, batch_size=config.batch_size, seed=0)
    if "mig" in selected:
        mig = metrics.mig(codes, factors)
        out["mig"] = float(mig["mig"])
        out["mig_per_factor"] = [float(v) for v in mig["per_factor"]]
    if "factor_vae" in selected:
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
        out["factor_vae"] = float(factor_vae["eval_accuracy"])
        out["factor_vae_train"] = float(factor_vae["train_accuracy"])
        out["active_dims"] = int(factor_vae["num_active_dims"])
    if {"dci", "sap", "modularity"} & set(selected):
        test = sample(max(config.mig_points // 2, 2), batch_size=config.batch_size, seed=1)
        if "dci" in selected:
            dci = metrics.dci(codes, factors, *test)
            for name in ("disentanglement", "completeness", "nrmse_train", "nrmse_test"):
                out[f"dci_{name}"] = float(dci[name])
        if "sap" in selected:
            sap = metrics.sap(codes, factors, *test)
            out["sap"] = float(sap["sap"])
            out["sap_per_factor"] = [float(v) for v in sap["per_factor"]]
        if "modularity" in selected:
            out.update({k: float(v) for k, v in metrics.modularity_explicitness(codes, factors, *test).items()})
    if "unsupervised" in selected:
        out.update(_unsupervised(codes))
    if heldout is not None and "mig" in selected:
        held = metrics.mig_from_model(
            heldout_sampler(heldout), render, represent, num_points=config.mig_points, batch_size=config.batch_size
        )
        out["heldout_mig"] = float(held["mig"])
        out["heldout_mig_per_factor"] = [float(v) for v in held["per_factor"]]
    return out


def _unsupervised(codes: np.ndarray) -> dict:
    """`metrics.unsupervised_scores` of the code dimensions that vary (a collapsed one has no log variance)."""
    varying = codes[:, codes.min(axis=0) < codes.max(axis=0)]
    if varying.shape[1] < 2:
        return dict.fromkeys(SCORES["unsupervised"])
    return {k: float(v) for k, v in metrics.unsupervised_scores(varying).items()}


def markdown_table(rows: list[dict]) -> str:
    """One line per model with disentanglement scores: method, dataset, beta, seed and every scalar score
    any of them has (per-factor values stay in results.json); "" when no row has scores."""
    rows = [r for r in rows if r.get("disentanglement")]
    present = {k for r in rows for k in r["disentanglement"]}
    columns = [k for m in METRICS for k in SCORES[m] if k in present]
    if not columns:
        return ""
    header = ["method", "dataset", "beta", "seed", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(rows, key=lambda r: (report.method_name(r), r["dataset"], r["beta"], r["seed"])):
        scores = r["disentanglement"]
        cells = [report.method_name(r), r["dataset"], f"{r['beta']:g}", str(r["seed"])]
        cells += [_cell(scores.get(k)) for k in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def write_report(out_dir: str, results: dict | list[dict]) -> str:
    """`echo_jax.report.write_report` (results.md with the rate-distortion table; plots for two or more betas),
    with the disentanglement scores' table under it in results.md; returns the text of results.md."""
    rows = results["results"] if isinstance(results, dict) else results
    scores = markdown_table(rows)
    if scores:
        scores = (
            "\nDisentanglement scores on all of dSprites' factor combinations (heldout_mig: on the combinations "
            "correlated dSprites removed from training); per-factor values are in results.json.\n\n" + scores
        )
    return report.write_report(out_dir, rows, appendix=scores)
