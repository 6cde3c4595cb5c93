"""Many betas at once against the same models trained one after another, measured in one run.

    python benchmarks/sweep.py [--models mlp,conv] [--betas 1,4,8,16] [--steps 5]

For each network and each number of betas N, one training step of all N models on one batch of 100:
- "back to back": N independent single-model runs, each its own jitted step (what one would do without
  the sweep engine), issued one after another;
- "sweep (auto)": `echo_jax.sweep.Population` with the strategy it picks for this backend;
- "sweep (vmap)": the vmapped step on the default device (sharded when there are several devices).
- "sweep (vmap, 2 CPU devices)" (CPU only): the vmapped step sharded over 2 simulated CPU devices,
  measured in a subprocess started with XLA_FLAGS=--xla_force_host_platform_device_count=2.
Printed: milliseconds per step of all N models, examples per second per beta, the speed ratio against
back to back, and the memory XLA plans for the vmapped step (arguments + temporaries) as N grows
(on an accelerator also the device's peak bytes in use). Times are medians of the timed steps after a
warm-up step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from echo_jax import defaults, sweep, train
from echo_jax.networks import cpu_compiler_options

BATCH = 100


def build(network: str):
    config = defaults.rate_distortion_config()
    config.network = network
    model = train.make_model(config, (28, 28, 1))
    optimizer = train.make_optimizer(config, 500)
    sample = jnp.zeros((BATCH, 28, 28, 1))
    init = jax.vmap(lambda k: train.create_train_state(model, optimizer, k, sample, sample[0]))
    return train.make_train_step(model, optimizer), init


def batches(steps: int):
    rng = np.random.default_rng(0)
    return [jnp.asarray(rng.random((BATCH, 28, 28, 1)) < 0.13, jnp.float32) for _ in range(steps + 1)]


def timed(step_all, data) -> float:
    jax.block_until_ready(step_all(data[0]))  # compile and warm up
    times = []
    for batch in data[1:]:
        start = time.perf_counter()
        jax.block_until_ready(step_all(batch))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def back_to_back(train_step, init, n: int, data) -> float:
    step = jax.jit(train_step, donate_argnums=0, compiler_options=cpu_compiler_options())
    states = [jax.tree.map(lambda x: x[0], jax.jit(init)(jax.random.PRNGKey(m)[None])) for m in range(n)]
    beta = jnp.float32(1.0)

    def step_all(batch):
        out = None
        for m in range(n):
            states[m], out = step(states[m], batch, beta)
        return out

    return timed(step_all, data)


def population(train_step, init, n: int, data, strategy: str) -> float:
    keys = jnp.stack([jax.random.PRNGKey(m) for m in range(n)])
    pop = sweep.Population(train_step, init, keys, jnp.linspace(0.1, 10.0, n), strategy=strategy)
    def step_all(batch):
        pop.step(batch)
        pop.block_until_ready()

    return timed(step_all, data)


def vmap_memory_mib(train_step, init, n: int) -> float:
    """XLA's planned memory for the vmapped step of n models (arguments, outputs and temporaries)."""
    states = jax.eval_shape(init, jax.ShapeDtypeStruct((n, 2), jnp.uint32))
    step = jax.jit(jax.vmap(train_step, in_axes=(0, None, 0)), donate_argnums=0,
                   compiler_options=cpu_compiler_options())
    analysis = step.lower(states, jnp.zeros((BATCH, 28, 28, 1)), jnp.ones((n,))).compile().memory_analysis()
    if analysis is None:
        return float("nan")
    total = analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
    return (total - analysis.alias_size_in_bytes) / 2**20


def measure(networks, counts, steps, strategies) -> dict:
    out = {}
    for network in networks:
        train_step, init = build(network)
        data = batches(steps)
        for n in counts:
            row = {"back to back": back_to_back(train_step, init, n, data)}
            for strategy in strategies:
                row[f"sweep ({strategy})"] = population(train_step, init, n, data, strategy)
            row["vmap memory MiB"] = vmap_memory_mib(train_step, init, n)
            if jax.default_backend() != "cpu":
                row["peak device MiB"] = jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0) / 2**20
            out[f"{network}/{n}"] = row
            print(f"  measured {network} N={n}: {row}", file=sys.stderr, flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,conv")
    parser.add_argument("--betas", default="1,4,8,16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--only", choices=["vmap"], help=argparse.SUPPRESS)  # the 2-device subprocess
    args = parser.parse_args()
    networks, counts = args.models.split(","), [int(n) for n in args.betas.split(",")]

    if args.only:
        print(json.dumps(measure(networks, counts, args.steps, ["vmap"])))
        return
    print(f"backend: {jax.default_backend()}, devices: {jax.device_count()}, batch {BATCH}, Adam")
    results = measure(networks, counts, args.steps, ["auto", "vmap"])
    if jax.default_backend() == "cpu":
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        proc = subprocess.run([sys.executable, __file__, "--only", "vmap", "--models", args.models, "--betas",
                               args.betas, "--steps", str(args.steps)], env=env, capture_output=True, text=True,
                              check=True)
        for key, row in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            results[key]["sweep (vmap, 2 CPU devices)"] = row["sweep (vmap)"]

    for network in networks:
        print(f"\n{network}: ms per step of all N models | examples/s per beta | speed vs back to back")
        variants = [k for k in results[f"{network}/{counts[0]}"] if not k.endswith("MiB")]
        print("| N | " + " | ".join(variants) + " | vmap memory MiB |")
        print("|---" * (len(variants) + 2) + "|")
        for n in counts:
            row = results[f"{network}/{n}"]
            base = row["back to back"]
            cells = [f"{row[v] * 1e3:.0f} ms, {BATCH / row[v]:.0f}/s, {base / row[v]:.2f}x" for v in variants]
            print(f"| {n} | " + " | ".join(cells) + f" | {row['vmap memory MiB']:.0f} |")


if __name__ == "__main__":
    main()
