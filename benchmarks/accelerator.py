"""The sweep table for an accelerator, in one command: how many models a GPU or TPU trains per second.

    python -m benchmarks.accelerator [--smoke] [--out PATH] [--budget-s 420]

For the quick MLP (784-500-500-32) and the paper's conv network, batch 100, the Echo encoder, on the
bundled mnist_sample (9,000 digits, dynamically binarized: nothing to download), and N in {1, 4, 16, 64}
models (one beta each), three ways to train N models:

- back to back: each update issues N single-model steps, one after another, with a batch built in numpy
  and copied in (the sweep's "sequential" strategy; what one does without the sweep engine);
- vmapped sweep: one vmapped step of all N models per update, the batch still from the host;
- vmapped sweep, on-device loop: the split resident on the device(s) and K = 45 updates per dispatch in
  one `lax.scan` (`echo_jax.device_loop`; 45 divides the 90 updates of an epoch).

Each is timed over one epoch (90 updates) after a warm-up dispatch that compiles it. Examples per
second count every model's examples (N x 100 x updates / s); the speed-up is against back to back at
the same N. Memory per model: XLA's planned memory of one dispatch (arguments, outputs, temporaries)
divided by N, without the on-device split (given once, it is one copy per device); for back to back,
one model's training state (what stays resident per model; one step's temporaries are shared).

It writes the table in Markdown to --out (default benchmarks/accelerator.md) as rows finish, so a run
cut short still leaves the rows it measured; rows that would start after --budget-s seconds are marked
skipped. Expected run time on one GPU or TPU chip: under 8 minutes, most of it compiling.

On the CPU (or with --smoke) it runs a smoke size that checks the script, not the hardware: a tiny MLP
(hidden 32, latent 4, batch 16), N in {1, 2}, 4 updates, K = 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp

from echo_jax import data as data_lib
from echo_jax import defaults, device_loop, steps, sweep


@dataclasses.dataclass(frozen=True)
class Size:
    """What one run of the benchmark measures."""

    networks: tuple[str, ...]
    counts: tuple[int, ...]
    updates: int  # timed updates per (network, N, variant)
    steps_per_call: int  # K of the on-device loop
    overrides: dict = dataclasses.field(default_factory=dict)  # config fields, on top of the quick config


FULL = Size(networks=("mlp", "conv"), counts=(1, 4, 16, 64), updates=90, steps_per_call=45)
SMOKE = Size(
    networks=("mlp",),
    counts=(1, 2),
    updates=4,
    steps_per_call=2,
    overrides=dict(model=dict(mlp_hidden=(32,), latent_dim=4), batch_size=16),
)
# (name, sweep strategy, data loop)
VARIANTS = (
    ("back to back", "sequential", "host"),
    ("vmapped sweep", "vmap", "host"),
    ("vmapped sweep, on-device loop", "vmap", "device"),
)


def build(network: str, size: Size):
    """The config, single-model train step, stacked-state init and training split of one network."""
    config = defaults.rate_distortion_config(quick=True)  # mnist_sample, Echo, batch 100, MLP 500-500
    config.model.network = network
    config.update(size.overrides)
    train_set = data_lib.load(config.dataset, "train")
    model = steps.make_model(config, train_set.image_shape)
    optimizer = steps.make_optimizer(config, data_lib.num_batches(train_set, config.batch_size))
    sample = jnp.asarray(next(data_lib.eval_batches(train_set, config.batch_size)))
    init = jax.vmap(lambda key: steps.create_train_state(model, optimizer, key, sample, sample[0]))
    return config, steps.make_train_step(model, optimizer), init, train_set


def host_updates(population, train_set, batch_size: int, updates: int) -> None:
    """`updates` updates of every model, each on a batch built in numpy and copied in."""
    epoch, done = 0, 0
    while done < updates:
        for batch in data_lib.batches(train_set, batch_size, seed=0, epoch=epoch):
            population.step(jnp.asarray(batch))
            done += 1
            if done == updates:
                break
        epoch += 1


def device_updates(population, data, updates: int, steps_per_call: int) -> None:
    """`updates` updates of every model on the on-device split, K per dispatch, never across an epoch."""
    step, orders = 0, {}
    while step < updates:
        epoch, start = divmod(step, data.steps_per_epoch)
        if epoch not in orders:
            orders = {epoch: device_loop.epoch_order(data, epoch)}
        count = min(steps_per_call, device_loop.steps_to_boundary(step, (data.steps_per_epoch,), updates))
        population.run_steps(data, orders[epoch], epoch, start, count)
        step += count


def measure(config, train_step, init, train_set, n: int, strategy: str, data_loop: str, size: Size) -> dict:
    """Examples per second and memory per model of one variant (after a warm-up dispatch that compiles)."""
    keys = jnp.stack([jax.random.PRNGKey(m) for m in range(n)])
    population = sweep.Population(train_step, init, keys, jnp.geomspace(0.25, 4.0, n), strategy=strategy)
    batch_size, k = config.batch_size, size.steps_per_call
    if data_loop == "host":
        run = lambda updates: host_updates(population, train_set, batch_size, updates)
        warm_up = 1
    else:
        data = population.device_data(train_set, batch_size, seed=0)
        run = lambda updates: device_updates(population, data, updates, k)
        warm_up = k
    run(warm_up)
    population.block_until_ready()
    start = time.perf_counter()
    run(size.updates)
    population.block_until_ready()
    seconds = time.perf_counter() - start
    if strategy == "sequential":
        per_model = sweep.model_bytes(train_step, init, jnp.zeros((batch_size, 28, 28, 1)), "sequential")
    elif data_loop == "host":
        per_model = population.dispatch_bytes(jnp.zeros((batch_size, 28, 28, 1))) / n
    else:
        order = device_loop.epoch_order(data, 0)
        per_model = (population.dispatch_bytes(device_args=(data, order, 0, 0, k)) - data.images.nbytes) / n
    return {"examples_per_s": n * batch_size * size.updates / seconds, "mib_per_model": per_model / 2**20}


def describe_network(config) -> str:
    if config.model.network == "mlp":
        return f"MLP 784-{'-'.join(str(h) for h in config.model.mlp_hidden)}-{config.model.latent_dim}"
    return f"conv (Alemi et al. 2018), latent {config.model.latent_dim}"


def markdown(results: dict, notes: dict, size: Size) -> str:
    """The table: one section per network, one row per N, one column per variant."""
    device = jax.devices()[0]
    lines = [
        f"# Sweep speed: {device.device_kind} ({jax.default_backend()}, {jax.device_count()} device(s))",
        "",
        f"jax {jax.__version__}; Echo encoder, Adam, batch {notes['batch']}, mnist_sample (dynamic "
        f"binarization); {size.updates} timed updates after a compiling warm-up; on-device loop K = "
        f"{size.steps_per_call}. Examples/s = N x batch x updates / s (all models); speed-up against back "
        "to back at the same N. MiB per model: XLA's planned memory of one dispatch / N (back to back: "
        f"one model's state). The on-device split takes {notes.get('split_mib', float('nan')):.1f} MiB "
        "per device.",
        "",
    ]
    for network, rows in results.items():
        lines += [
            f"## {notes[network]}",
            "",
            "| N | " + " | ".join(name for name, _, _ in VARIANTS) + " | MiB per model (same order) |",
            "|---" * (len(VARIANTS) + 2) + "|",
        ]
        for n, row in rows.items():
            base = row.get("back to back", {}).get("examples_per_s")
            cells, memory = [], []
            for name, _, _ in VARIANTS:
                cell = row.get(name)
                if cell is None:
                    cells.append("skipped")
                    memory.append("-")
                    continue
                ratio = f" ({cell['examples_per_s'] / base:.2f}x)" if base else ""
                cells.append(f"{cell['examples_per_s']:,.0f}/s{ratio}")
                memory.append(f"{cell['mib_per_model']:.1f}")
            lines.append(f"| {n} | " + " | ".join(cells) + " | " + " / ".join(memory) + " |")
        lines.append("")
    lines.append(f"Measured in {notes['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def run(size: Size, out: str, budget_s: float) -> str:
    """Measures every (network, N, variant) of `size`, rewriting the table at `out` after each row."""
    start = time.perf_counter()
    results, notes = {}, {}
    for network in size.networks:
        config, train_step, init, train_set = build(network, size)
        notes[network], notes["batch"] = describe_network(config), config.batch_size
        notes["split_mib"] = device_loop.data_bytes(train_set) / 2**20
        results[network] = {}
        for n in size.counts:
            row = results[network][n] = {}
            for name, strategy, data_loop in VARIANTS:
                if time.perf_counter() - start > budget_s:
                    continue  # shown as skipped
                row[name] = measure(config, train_step, init, train_set, n, strategy, data_loop, size)
                print(f"{network} N={n} {name}: {row[name]}", flush=True)
            notes["seconds"] = time.perf_counter() - start
            text = markdown(results, notes, size)
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            with open(out, "w") as f:
                f.write(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the smoke size (automatic on the CPU)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "accelerator.md"))
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no row after this many seconds")
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke or jax.default_backend() == "cpu" else FULL
    print(run(size, args.out, args.budget_s))


if __name__ == "__main__":
    main()
