"""Cost of the jnp metrics against a numpy/scikit-learn implementation of the same definitions.

    python benchmarks/metrics.py [--repeats 3] [--num-votes 2000]

MIG: 10,000 x 10 float32 codes, 5 factors with dSprites' class counts (3, 6, 40, 32, 32);
`echo_jax.metrics.mig` (numpy histogram binning on the host, then one jitted bincount for all 50
mutual informations) against np.histogram/np.digitize + sklearn `mutual_info_score` per pair, the
way disentanglement_lib computes it. Both are checked to agree to 1e-6 before timing.

FactorVAE: the same factor world, render = factors as float32, and a 10-d representation that is
either a numpy map or a jitted JAX call (as a model's would be); `factor_vae_score` against the
disentanglement_lib protocol written vote by vote in numpy (one factor draw, render, represent,
variance and argmin per vote). Both call `represent` once per batch of 64, so the representation's
own cost is the same in both; the difference is the protocol's overhead around it.
Variance estimate 10,000 points, `--num-votes` training votes and half as many evaluation votes.

Times are the minimum over repeats, after one warm-up call (compilation excluded), since other
processes may load the CPU.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.metrics import mutual_info_score

from echo_jax import metrics

FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_POINTS, CODE_DIMS, BATCH = 10_000, 10, 64


def reference_mig(codes, factors, num_bins=20):
    binned = [np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in codes.T]
    mutual_info = np.array([[mutual_info_score(f, b) for f in factors.T] for b in binned])
    entropy = np.array([mutual_info_score(f, f) for f in factors.T])
    ordered = np.sort(mutual_info, axis=0)
    per_factor = (ordered[-1] - ordered[-2]) / entropy
    return {"mig": per_factor.mean(), "per_factor": per_factor}


def reference_factor_vae(
    sample_factors,
    render,
    represent,
    factor_sizes,
    seed,
    batch_size,
    num_train,
    num_eval,
    num_variance_estimate,
    prune_threshold=0.05,
):
    rng = np.random.default_rng(seed)
    factors = sample_factors(rng, num_variance_estimate)
    codes = np.concatenate(
        [
            np.asarray(represent(render(factors[i : i + batch_size])))
            for i in range(0, num_variance_estimate, batch_size)
        ]
    )
    global_variances = np.var(codes, axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_variances) >= prune_threshold)

    def votes_for(num_votes):
        votes = np.zeros((len(factor_sizes), codes.shape[1]), dtype=np.int64)
        for _ in range(num_votes):
            fixed = rng.integers(len(factor_sizes))
            batch = sample_factors(rng, batch_size)
            batch[:, fixed] = batch[0, fixed]
            local = np.var(np.asarray(represent(render(batch))), axis=0, ddof=1)
            votes[fixed, active[np.argmin(local[active] / global_variances[active])]] += 1
        return votes

    train = votes_for(num_train)
    classifier = np.argmax(train, axis=0)
    columns = np.arange(train.shape[1])
    evaluation = votes_for(num_eval)
    return {
        "train_accuracy": train[classifier, columns].sum() / train.sum(),
        "eval_accuracy": evaluation[classifier, columns].sum() / evaluation.sum(),
    }


def best_time(fn, repeats):
    jax.block_until_ready(fn())  # warm-up: compilation is not timed
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def row(name, seconds, reference_seconds):
    print(f"| {name:46s} | {seconds * 1e3:9.1f} | {reference_seconds / seconds:8.1f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-votes", type=int, default=2000)
    args = parser.parse_args()
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    header = f"| {'implementation':46s} | {'ms':>9s} | {'speed-up':>9s} |\n|{'-' * 48}|{'-' * 11}|{'-' * 11}|"

    rng = np.random.default_rng(0)
    factors = rng.integers(0, FACTOR_SIZES, size=(NUM_POINTS, len(FACTOR_SIZES)))
    mixing = rng.normal(size=(len(FACTOR_SIZES), CODE_DIMS)) / np.asarray(FACTOR_SIZES)[:, None]
    codes = (factors @ mixing + 0.3 * rng.normal(size=(NUM_POINTS, CODE_DIMS))).astype(np.float32)
    ours, expected = metrics.mig(codes, factors), reference_mig(codes, factors)
    np.testing.assert_allclose(np.asarray(ours["per_factor"]), expected["per_factor"], atol=1e-6)
    reference_seconds = best_time(lambda: reference_mig(codes, factors), args.repeats)
    jnp_seconds = best_time(lambda: metrics.mig(codes, factors)["mig"], args.repeats)
    print(
        f"\nMIG, {NUM_POINTS} x {CODE_DIMS} codes, factors {FACTOR_SIZES}, 20 bins "
        f"(min of {args.repeats}; speed-up over the numpy/sklearn reference)\n{header}"
    )
    row("numpy + sklearn mutual_info_score (reference)", reference_seconds, reference_seconds)
    row("echo_jax.metrics.mig", jnp_seconds, reference_seconds)

    sample_factors = lambda generator, n: generator.integers(0, FACTOR_SIZES, size=(n, len(FACTOR_SIZES)))
    render = lambda batch: batch.astype(np.float32)
    mixing32 = mixing.astype(np.float32)
    representations = {
        "numpy represent": lambda images: np.tanh(images @ mixing32),
        "jitted JAX represent": jax.jit(lambda images: jnp.tanh(images @ jnp.asarray(mixing32))),
    }
    settings = dict(
        seed=12,
        batch_size=BATCH,
        num_train=args.num_votes,
        num_eval=args.num_votes // 2,
        num_variance_estimate=NUM_POINTS,
    )
    for name, represent in representations.items():
        reference_seconds = best_time(
            lambda represent=represent: reference_factor_vae(
                sample_factors, render, represent, FACTOR_SIZES, **settings
            )["eval_accuracy"],
            args.repeats,
        )
        jnp_seconds = best_time(
            lambda represent=represent: metrics.factor_vae_score(
                sample_factors, render, represent, FACTOR_SIZES, **settings
            )["eval_accuracy"],
            args.repeats,
        )
        ours = metrics.factor_vae_score(sample_factors, render, represent, FACTOR_SIZES, **settings)
        print(
            f"\nFactorVAE, {name}, {args.num_votes} + {args.num_votes // 2} votes of {BATCH}, "
            f"eval accuracy {ours['eval_accuracy']:.3f}\n{header}"
        )
        row("numpy protocol, vote by vote (reference)", reference_seconds, reference_seconds)
        row("echo_jax.metrics.factor_vae_score", jnp_seconds, reference_seconds)


if __name__ == "__main__":
    main()
