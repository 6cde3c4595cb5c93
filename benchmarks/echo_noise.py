"""Cost of Echo sampling against a Gaussian reparameterisation, forward + gradient, measured in one run.

    python benchmarks/echo_noise.py [--repeats 5] [--iters 200]

Rows: echo_sample with independent permutations (the default), with the shared cyclic order, and a
straightforward implementation (one `jax.random.permutation` per example, `cumsum` over the terms, as in
the original code's algorithm) for reference. Ratios are against the Gaussian reparameterisation
z = mu + sigma * N(0, 1) at the same shapes. Times are the minimum over repeats (other processes may load
the CPU).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from echo_jax import echo_clip, echo_sample


def straightforward_echo(key, fx, log_s, clip):
    batch = fx.shape[0]

    def others(k, i):  # a random permutation of {0..B-1} minus i
        p = jax.random.permutation(k, batch - 1)
        return jnp.where(p >= i, p + 1, p)

    perm = jax.vmap(others)(jax.random.split(key, batch), jnp.arange(batch))
    log_s = jnp.log(clip) + log_s
    terms = log_s[perm]
    prefix = jnp.exp(jnp.cumsum(terms, axis=1) - terms)
    return fx + jnp.exp(log_s) * jnp.sum(prefix * fx[perm], axis=1)


def gaussian(key, mean, log_var, clip):
    del clip
    return mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)


def time_fwd_grad(sample, batch, dim, iters, repeats):
    key = jax.random.PRNGKey(0)
    fx = jnp.tanh(jax.random.normal(key, (batch, dim)))
    log_s = jax.nn.log_sigmoid(jax.random.normal(jax.random.PRNGKey(1), (batch, dim)))
    clip = echo_clip(batch - 1)
    step = jax.jit(jax.value_and_grad(lambda k, f, s: jnp.sum(sample(k, f, s, clip) ** 2), argnums=(1, 2)))
    jax.block_until_ready(step(key, fx, log_s))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(iters):
            out = step(jax.random.fold_in(key, i), fx, log_s)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / iters)
    return best * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()

    variants = {
        "gaussian reparameterisation": gaussian,
        "echo_sample (independent, default)": lambda k, f, s, c: echo_sample(k, f, s, clip=c),
        "echo_sample (cyclic)": lambda k, f, s, c: echo_sample(k, f, s, clip=c, order="cyclic"),
        "straightforward echo (reference)": straightforward_echo,
    }
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    for batch, dim in [(100, 32), (64, 10)]:
        times = {name: time_fwd_grad(fn, batch, dim, args.iters, args.repeats) for name, fn in variants.items()}
        base = times["gaussian reparameterisation"]
        print(f"\nB={batch}, D={dim}: forward + gradient, ms per call (min of {args.repeats})")
        print(f"| {'variant':36s} | {'ms':>7s} | {'x gaussian':>10s} | {'x reference':>11s} |")
        print(f"|{'-' * 38}|{'-' * 9}|{'-' * 12}|{'-' * 13}|")
        for name, ms in times.items():
            ref = times["straightforward echo (reference)"] / ms
            print(f"| {name:36s} | {ms:7.3f} | {ms / base:10.1f} | {ref:10.1f}x |")


if __name__ == "__main__":
    main()
