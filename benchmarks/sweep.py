"""Many betas at once against the same models trained one after another, measured in one run.

    python benchmarks/sweep.py [--models mlp,conv] [--betas 1,4,8,16] [--steps 5]
    python benchmarks/sweep.py --loops [--loop-models tiny,quick_mlp] [--rounds 3]

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

With ``--loops``: model-steps per second of the training loop itself (`echo_jax.train`'s dispatch code,
data included) with the host loop (a numpy batch copied in and one dispatch per step) against the
on-device loop (`echo_jax.device_loop`: the split on the device, K steps per dispatch, K = 1 and K =
--k), for a tiny model (where the dispatch dominates) and the quick MLP (configs/rate_distortion/echo.py:
quick: MLP 784-500-500-32, batch 100), both on the bundled mnist_sample (dynamically binarized). The
variants are timed in interleaved rounds (medians), so the ratios hold on a shared, loaded machine.
Measured on the 2-core CPU, loaded by two other training processes (model-steps/s against the host loop;
three runs, 1 model twice and 4 models once):

    tiny       host 1.00x   device K=1 0.84-0.98x   device K=30 1.01-1.26x
    quick_mlp  host 1.00x   device K=1 0.89-1.07x   device K=30 1.04-1.27x

The gain at K = 30 is no larger than the spread between runs, so "auto" keeps the host loop on the CPU
(`echo_jax.device_loop.CPU_DATA_LOOP`).
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

from echo_jax import data as data_lib
from echo_jax import defaults, device_loop, steps, sweep, train
from echo_jax.networks import cpu_compiler_options

BATCH = 100


def build(network: str):
    config = defaults.rate_distortion_config()
    config.model.network = network
    model = steps.make_model(config, (28, 28, 1))
    optimizer = steps.make_optimizer(config, 500)
    sample = jnp.zeros((BATCH, 28, 28, 1))
    init = jax.vmap(lambda k: steps.create_train_state(model, optimizer, k, sample, sample[0]))
    return steps.make_train_step(model, optimizer), init


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
    step = jax.jit(
        jax.vmap(train_step, in_axes=(0, None, 0)), donate_argnums=0, compiler_options=cpu_compiler_options()
    )
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


# The --loops models: the tiny model of the tests, and the quick configs' MLP (784-500-500-32, batch 100).
LOOP_MODELS = {
    "tiny": dict(model=dict(mlp_hidden=(32,), latent_dim=4), batch_size=16),
    "quick_mlp": dict(),
}


def loop_setup(name: str, num_models: int, k: int):
    """A population of `num_models` echo models of LOOP_MODELS[name] and the training split."""
    config = defaults.rate_distortion_config(quick=True)
    config.update(LOOP_MODELS[name])
    config.steps_per_call = k
    train_set = data_lib.load(config.dataset, "train")
    model = steps.make_model(config, train_set.image_shape)
    optimizer = steps.make_optimizer(config, data_lib.num_batches(train_set, config.batch_size))
    sample = jnp.asarray(train_set.images[: config.batch_size])
    init = jax.vmap(lambda key: steps.create_train_state(model, optimizer, key, sample, sample[0]))
    keys = jnp.stack([jax.random.PRNGKey(m) for m in range(num_models)])
    population = sweep.Population(
        steps.make_train_step(model, optimizer), init, keys, jnp.linspace(0.5, 2.0, num_models)
    )
    return config, population, train_set


def loop_seconds(config, population, train_set, data_loop: str, steps: int) -> float:
    """Seconds for `steps` updates of every model through the training loop's dispatch code."""
    steps_per_epoch = data_lib.num_batches(train_set, config.batch_size)
    advance = train._make_advance(config, population, train_set, data_loop, 0)  # noqa: SLF001 - measured as used
    start, step = time.perf_counter(), 0
    while step < steps:
        step += advance(step, device_loop.steps_to_boundary(step, (steps_per_epoch,), steps))
    population.block_until_ready()
    return time.perf_counter() - start


def measure_loops(names, num_models: int, k: int, rounds: int, steps: dict) -> dict:
    """Model-steps per second per (model, loop), medians over interleaved rounds after a warm-up."""
    out = {}
    for name in names:
        variants = {"host": ("host", 1), "device, K=1": ("device", 1), f"device, K={k}": ("device", k)}
        setups = {v: loop_setup(name, num_models, kk) for v, (_, kk) in variants.items()}
        times = {v: [] for v in variants}
        for r in range(rounds + 1):  # round 0 compiles and warms up
            for v, (data_loop, _) in variants.items():
                seconds = loop_seconds(*setups[v], data_loop, steps[name])
                if r:
                    times[v].append(seconds)
        out[name] = {v: num_models * steps[name] / float(np.median(t)) for v, t in times.items()}
        print(f"  measured {name}: {out[name]}", file=sys.stderr, flush=True)
    return out


def print_loops(results: dict, num_models: int) -> None:
    print(f"\nmodel-steps per second, {num_models} model(s) ({jax.default_backend()}), speed against the host loop")
    variants = list(next(iter(results.values())))
    print("| model | " + " | ".join(variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for name, row in results.items():
        cells = [f"{row[v]:.0f}/s, {row[v] / row['host']:.2f}x" for v in variants]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,conv")
    parser.add_argument("--betas", default="1,4,8,16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--only", choices=["vmap"], help=argparse.SUPPRESS)  # the 2-device subprocess
    parser.add_argument("--loops", action="store_true", help="host loop against the on-device loop")
    parser.add_argument("--loop-models", default="tiny,quick_mlp")
    parser.add_argument("--loop-num-models", type=int, default=1)
    parser.add_argument("--k", type=int, default=30, help="steps per dispatch of the on-device loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop-steps", default="tiny=300,quick_mlp=90")
    args = parser.parse_args()
    if args.loops:
        steps = {k: int(v) for k, v in (kv.split("=") for kv in args.loop_steps.split(","))}
        names = args.loop_models.split(",")
        print_loops(measure_loops(names, args.loop_num_models, args.k, args.rounds, steps), args.loop_num_models)
        return
    networks, counts = args.models.split(","), [int(n) for n in args.betas.split(",")]

    if args.only:
        print(json.dumps(measure(networks, counts, args.steps, ["vmap"])))
        return
    print(f"backend: {jax.default_backend()}, devices: {jax.device_count()}, batch {BATCH}, Adam")
    results = measure(networks, counts, args.steps, ["auto", "vmap"])
    if jax.default_backend() == "cpu":
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--only",
                "vmap",
                "--models",
                args.models,
                "--betas",
                args.betas,
                "--steps",
                str(args.steps),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
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
