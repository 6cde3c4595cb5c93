"""Cost of Echo sampling against a Gaussian reparameterisation, forward + gradient, measured in one run.

    python benchmarks/echo_noise.py [--repeats 5] [--iters 200]

Rows: echo_sample with independent permutations (the default; on the CPU it sums the series by Horner's
rule in a scan, with a hand-written gradient), the same series with the gradient autodiff derives, the
log-depth form it uses on other platforms (all terms gathered, an associative scan of log-products), the
shared cyclic order, and a straightforward implementation (one `jax.random.permutation` per example,
`cumsum` over the terms, as in the original code's algorithm) for reference. Ratios are against the
Gaussian reparameterisation z = mu + sigma * N(0, 1) at the same shapes. Times are the minimum over
repeats (other processes may load the CPU).

Then one whole training step (forward + gradient + Adam) of the MLP Echo model (784-500-500-32, binarized
MNIST shapes) at batches 100 and 400, with each form of the independent series: medians of interleaved
steps, so the ratio holds on a loaded machine. Measured on the 2-core CPU beside a training process
(--repeats 3 --iters 100):

    noise alone, B=400 D=32:  Horner 18.4 ms, autodiff gradient 44.6 ms (2.4x), log-depth 117.9 ms (6.4x)
    noise alone, B=100 D=32:  Horner 1.0 ms,  autodiff gradient 1.5 ms (1.5x),  log-depth 2.9 ms (2.9x)
    MLP train step, B=400:    Horner 52.6 ms, autodiff gradient 77.4 ms (1.47x), log-depth 146.8 ms (2.79x)
    MLP train step, B=100:    Horner 13.9 ms, autodiff gradient 14.4 ms (1.04x), log-depth 15.7 ms (1.12x)

Both Horner gradients train to bit-identical parameters (20 steps at either batch, compared there).
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from echo_jax import defaults, echo_clip, echo_sample, noise, steps
from echo_jax.networks import cpu_compiler_options


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


def log_depth_echo(key, fx, log_s, clip):
    idx = noise.other_indices(key, fx.shape[0]).T
    log_s = jnp.log(clip) + log_s
    return fx + jnp.exp(log_s) * noise._series_by_prefix(idx, fx, log_s)


def autodiff_horner(idx, fx, log_s_clipped):
    """The CPU form of the series with the gradient autodiff derives (each step's gather becomes a scatter)."""
    s = jnp.exp(log_s_clipped)
    eps, _ = jax.lax.scan(lambda acc, t: (fx[t] + s[t] * acc, None), jnp.zeros_like(fx), idx, reverse=True)
    return eps


def autodiff_horner_echo(key, fx, log_s, clip):
    idx = noise.other_indices(key, fx.shape[0]).T
    log_s = jnp.log(clip) + log_s
    return fx + jnp.exp(log_s) * autodiff_horner(idx, fx, log_s)


FORMS = [
    ("horner (cpu default)", noise._series_by_horner),
    ("horner, autodiff gradient", autodiff_horner),
    ("log-depth", noise._series_by_prefix),
]


def time_train_steps(batch: int, rounds: int = 4) -> dict[str, float]:
    """Median ms per MLP Echo train step with each form of the series, interleaved."""
    config = defaults.rate_distortion_config()
    config.model.network, config.batch_size = "mlp", batch
    model = steps.make_model(config, (28, 28, 1))
    optimizer = steps.make_optimizer(config, 500)
    rng = np.random.default_rng(0)
    data = [jnp.asarray(rng.random((batch, 28, 28, 1)) < 0.13, jnp.float32) for _ in range(6)]
    state = steps.create_train_state(model, optimizer, jax.random.PRNGKey(0), data[0], data[0][0])
    compiled = {}
    for name, form in FORMS:
        with mock.patch.object(noise, "_series_by_horner", form):  # the CPU branch, traced now
            step = jax.jit(steps.make_train_step(model, optimizer), compiler_options=cpu_compiler_options())
            compiled[name] = step.lower(state, data[0], jnp.float32(1.0)).compile()
    times = {name: [] for name in compiled}
    for _ in range(rounds):
        for name, step in compiled.items():
            for batch_data in data:
                start = time.perf_counter()
                jax.block_until_ready(step(state, batch_data, jnp.float32(1.0)))
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


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
        "echo_sample, autodiff gradient": autodiff_horner_echo,
        "echo_sample log-depth form": log_depth_echo,
        "echo_sample (cyclic)": lambda k, f, s, c: echo_sample(k, f, s, clip=c, order="cyclic"),
        "straightforward echo (reference)": straightforward_echo,
    }
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    for batch, dim in [(400, 32), (100, 32), (64, 10)]:
        iters = max(1, args.iters // 10) if batch >= 400 else args.iters
        times = {name: time_fwd_grad(fn, batch, dim, iters, args.repeats) for name, fn in variants.items()}
        base = times["gaussian reparameterisation"]
        print(f"\nB={batch}, D={dim}: forward + gradient, ms per call (min of {args.repeats})")
        print(f"| {'variant':36s} | {'ms':>7s} | {'x gaussian':>10s} | {'x reference':>11s} |")
        print(f"|{'-' * 38}|{'-' * 9}|{'-' * 12}|{'-' * 13}|")
        for name, ms in times.items():
            ref = times["straightforward echo (reference)"] / ms
            print(f"| {name:36s} | {ms:7.3f} | {ms / base:10.1f} | {ref:10.1f}x |")
    for batch in (100, 400):
        times = time_train_steps(batch)
        horner = times["horner (cpu default)"]
        print(f"\nMLP Echo train step, batch {batch}: " + ", ".join(f"{n} {t:.1f} ms" for n, t in times.items()))
        print("  ratio to the default: " + ", ".join(f"{n} {t / horner:.2f}x" for n, t in times.items()))


if __name__ == "__main__":
    main()
