"""Train-step speed of the paper's conv VAE (and the MLP VAE): JAX/Flax against PyTorch eager.

One Gaussian-VAE train step (batch 100, Adam, latent 32): encoder trunk, Dense heads to mean and
log-variance, reparameterised sample, decoder logits, Bernoulli loss, analytic KL. Compared, in one
run and interleaved (other processes may share the CPU, so each variant is timed in several
interleaved blocks and the minimum and median per-step times are reported):

* JAX, the conv model written with plain `flax.linen.Conv` / `flax.linen.ConvTranspose`;
* JAX, the conv model of `echo_jax.networks` (polyphase transposed convs and input gradients,
  kernel gradients over cache-sized batch chunks, matrix-product forms of the one-channel and 7x7
  layers);
* each of the two with and without `echo_jax.networks.cpu_compiler_options()` on `jax.jit`;
* PyTorch eager, the same conv model (checked to compute the same function with the same weights);
* the MLP model (784-500-500, latent 32) in JAX and in PyTorch eager.

PyTorch is an optional extra of the benchmarks (``pip install torch``), never of the package.

Usage: python benchmarks/conv_step.py [--repeats 5] [--conv-steps 4] [--mlp-steps 40]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from echo_jax import networks

BATCH = 100
LATENT = 32
LEARNING_RATE = 1e-3


class PlainConvEncoder(nn.Module):
    """The paper's conv encoder trunk written with flax.linen.Conv (same parameter names)."""

    @nn.compact
    def __call__(self, x):
        init = dict(kernel_init=networks.keras_kernel_init)
        for i, (features, stride) in enumerate([(32, 1), (32, 2), (64, 1), (64, 2)]):
            x = nn.relu(nn.Conv(features, (5, 5), (stride, stride), "SAME", name=f"conv{i}", **init)(x))
        x = nn.relu(nn.Conv(256, (7, 7), padding="VALID", name="conv4", **init)(x))
        return x.reshape(x.shape[0], -1)


class PlainConvDecoder(nn.Module):
    """The paper's conv decoder written with flax.linen.ConvTranspose (same parameter names)."""

    @nn.compact
    def __call__(self, z):
        init = dict(kernel_init=networks.keras_kernel_init)
        x = z[:, None, None, :]
        layers = [
            (64, 7, 1, "VALID"),
            (64, 5, 1, "SAME"),
            (64, 5, 2, "SAME"),
            (32, 5, 1, "SAME"),
            (32, 5, 2, "SAME"),
            (32, 4, 1, "SAME"),
        ]
        for i, (features, k, s, padding) in enumerate(layers):
            x = nn.relu(nn.ConvTranspose(features, (k, k), (s, s), padding, name=f"deconv{i}", **init)(x))
        return nn.Conv(1, (5, 5), padding="SAME", name="conv_out", **init)(x)


class GaussianVAE(nn.Module):
    """Trunks plus linear Gaussian heads; returns the mean negative ELBO of a batch."""

    encoder: nn.Module
    decoder: nn.Module

    def setup(self):
        self.mean = nn.Dense(LATENT, kernel_init=networks.keras_kernel_init)
        self.log_var = nn.Dense(LATENT, kernel_init=networks.keras_kernel_init)

    def __call__(self, x, key):
        features = self.encoder(x)
        mean, log_var = self.mean(features), self.log_var(features)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
        logits = self.decoder(z)
        distortion = optax.sigmoid_binary_cross_entropy(logits, x).reshape(x.shape[0], -1).sum(-1)
        rate = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
        return jnp.mean(distortion + rate)

    def logits_at_mean(self, x):
        """Decoder logits at the posterior mean (deterministic, to compare implementations)."""
        return self.decoder(self.mean(self.encoder(x)))


def make_jax_step(model: nn.Module, images: jax.Array, compiler_options: dict[str, str]):
    """A jitted Adam train step and its initial (params, opt_state)."""
    tx = optax.adam(LEARNING_RATE)
    params = model.init(jax.random.PRNGKey(0), images, jax.random.PRNGKey(1))
    base_key = jax.random.PRNGKey(2)

    def step(params, opt_state, step_index):
        key = jax.random.fold_in(base_key, step_index)
        loss, grads = jax.value_and_grad(lambda p: model.apply(p, images, key))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    jitted = jax.jit(step, donate_argnums=(0, 1), compiler_options=compiler_options or None)
    return jitted, params, tx.init(params)


def jax_runner(model: nn.Module, images: jax.Array, compiler_options: dict[str, str]) -> Callable[[int], None]:
    """Returns run(n): n train steps, blocking until done."""
    step, params, opt_state = make_jax_step(model, images, compiler_options)
    state = {"params": params, "opt": opt_state, "i": 0}

    def run(n: int) -> None:
        for _ in range(n):
            state["params"], state["opt"], loss = step(state["params"], state["opt"], jnp.int32(state["i"]))
            state["i"] += 1
        jax.block_until_ready(loss)

    return run


def torch_models(torch):
    """The conv and MLP VAEs in PyTorch; the same layers, paddings and heads as the JAX models."""
    tnn, F = torch.nn, torch.nn.functional

    class ConvVAE(tnn.Module):
        def __init__(self):
            super().__init__()
            self.enc = tnn.ModuleList(
                [
                    tnn.Conv2d(1, 32, 5, padding=2),
                    tnn.Conv2d(32, 32, 5, 2),
                    tnn.Conv2d(32, 64, 5, padding=2),
                    tnn.Conv2d(64, 64, 5, 2),
                    tnn.Conv2d(64, 256, 7),
                ]
            )
            self.mean, self.log_var = tnn.Linear(256, LATENT), tnn.Linear(256, LATENT)
            # Paddings chosen so that every layer is the JAX layer with a spatially flipped kernel.
            self.dec = tnn.ModuleList(
                [
                    tnn.ConvTranspose2d(LATENT, 64, 7),
                    tnn.ConvTranspose2d(64, 64, 5, padding=2),
                    tnn.ConvTranspose2d(64, 64, 5, 2, padding=1),
                    tnn.ConvTranspose2d(64, 32, 5, padding=2),
                    tnn.ConvTranspose2d(32, 32, 5, 2, padding=1),
                    tnn.ConvTranspose2d(32, 32, 4, padding=1),
                ]
            )
            self.out = tnn.Conv2d(32, 1, 5, padding=2)

        def encode(self, x):
            # TF/JAX 'SAME': (2, 2) for stride 1 (the layer's own padding), (1, 2) for stride 2 on even sizes.
            for conv, pads in zip(self.enc, [None, (1, 2, 1, 2), None, (1, 2, 1, 2), None]):
                x = F.relu(conv(F.pad(x, pads) if pads else x))
            x = x.flatten(1)
            return self.mean(x), self.log_var(x)

        def decode(self, z):
            x = z[:, :, None, None]
            for i, deconv in enumerate(self.dec):
                x = deconv(x)
                if i in (2, 4, 5):  # one row/column more than 'SAME' on the high side
                    x = x[:, :, :-1, :-1]
                x = F.relu(x)
            return self.out(x)

    class MLPVAE(tnn.Module):
        def __init__(self):
            super().__init__()
            self.enc = tnn.Sequential(tnn.Linear(784, 500), tnn.ReLU(), tnn.Linear(500, 500), tnn.ReLU())
            self.mean, self.log_var = tnn.Linear(500, LATENT), tnn.Linear(500, LATENT)
            self.dec = tnn.Sequential(
                tnn.Linear(LATENT, 500), tnn.ReLU(), tnn.Linear(500, 500), tnn.ReLU(), tnn.Linear(500, 784)
            )

        def encode(self, x):
            h = self.enc(x.flatten(1))
            return self.mean(h), self.log_var(h)

        def decode(self, z):
            return self.dec(z).view(-1, 1, 28, 28)

    return ConvVAE, MLPVAE


def torch_loss(torch, model, x):
    mean, log_var = model.encode(x)
    z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
    logits = model.decode(z)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
    rate = 0.5 * torch.sum(torch.exp(log_var) + mean**2 - 1.0 - log_var, dim=-1)
    return torch.mean(bce + rate)


def torch_runner(torch, model, x) -> Callable[[int], None]:
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    def run(n: int) -> None:
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            torch_loss(torch, model, x).backward()
            opt.step()

    return run


def load_jax_conv_weights(torch, model, params) -> None:
    """Copies the JAX conv VAE's parameters into the PyTorch one (kernels of transposed convs flipped)."""
    p = jax.tree.map(np.asarray, params["params"])
    with torch.no_grad():
        for i, conv in enumerate(model.enc):
            conv.weight.copy_(torch.from_numpy(p["encoder"][f"conv{i}"]["kernel"].transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(p["encoder"][f"conv{i}"]["bias"].copy()))
        for name in ("mean", "log_var"):
            getattr(model, name).weight.copy_(torch.from_numpy(p[name]["kernel"].T.copy()))
            getattr(model, name).bias.copy_(torch.from_numpy(p[name]["bias"].copy()))
        for i, deconv in enumerate(model.dec):
            kernel = p["decoder"][f"deconv{i}"]["kernel"][::-1, ::-1].transpose(2, 3, 0, 1)
            deconv.weight.copy_(torch.from_numpy(kernel.copy()))
            deconv.bias.copy_(torch.from_numpy(p["decoder"][f"deconv{i}"]["bias"].copy()))
        model.out.weight.copy_(torch.from_numpy(p["decoder"]["conv_out"]["kernel"].transpose(3, 2, 0, 1).copy()))
        model.out.bias.copy_(torch.from_numpy(p["decoder"]["conv_out"]["bias"].copy()))


def check_same_function(torch, images: np.ndarray) -> tuple[float, float]:
    """Max |difference| of the logits, relative to their largest: echo_jax vs plain Flax, and vs PyTorch."""
    ours = GaussianVAE(networks.ConvEncoder(), networks.ConvDecoder())
    plain = GaussianVAE(PlainConvEncoder(), PlainConvDecoder())
    x = jnp.asarray(images)
    params = ours.init(jax.random.PRNGKey(0), x, jax.random.PRNGKey(1))
    # Non-zero biases too, so that the check covers them.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    params = jax.tree.unflatten(
        treedef, [a + 0.1 * jax.random.normal(k, a.shape) if a.ndim == 1 else a for a, k in zip(leaves, keys)]
    )

    ours_logits = ours.apply(params, x, method=GaussianVAE.logits_at_mean)
    plain_logits = plain.apply(params, x, method=GaussianVAE.logits_at_mean)
    ConvVAE, _ = torch_models(torch)
    tmodel = ConvVAE()
    load_jax_conv_weights(torch, tmodel, params)
    with torch.no_grad():
        torch_logits = tmodel.decode(tmodel.encode(torch.from_numpy(images.transpose(0, 3, 1, 2)))[0])
    torch_logits = torch_logits.numpy().transpose(0, 2, 3, 1)
    scale = float(jnp.max(jnp.abs(ours_logits)))
    return (
        float(jnp.max(jnp.abs(ours_logits - plain_logits))) / scale,
        float(np.max(np.abs(np.asarray(ours_logits) - torch_logits))) / scale,
    )


def time_interleaved(runners: dict[str, tuple[Callable[[int], None], int]], repeats: int) -> dict[str, list[float]]:
    """Per-step seconds of each runner, in `repeats` interleaved blocks (after one warm-up block)."""
    for run, steps in runners.values():
        run(max(1, steps // 4))  # compile and warm up
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, (run, steps) in runners.items():
            start = time.perf_counter()
            run(steps)
            times[name].append((time.perf_counter() - start) / steps)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing blocks per variant")
    parser.add_argument("--conv-steps", type=int, default=4, help="conv train steps per block")
    parser.add_argument("--mlp-steps", type=int, default=40, help="MLP train steps per block")
    args = parser.parse_args()

    import torch  # optional: the benchmark extra

    torch.set_num_threads(2)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = (rng.random((BATCH, 28, 28, 1)) < 0.3).astype(np.float32)
    x = jnp.asarray(images)
    x_torch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

    diff_plain, diff_torch = check_same_function(torch, images)
    print(
        f"same function (max |logit difference| / max |logit|): echo_jax vs plain flax {diff_plain:.1e}, "
        f"vs torch {diff_torch:.1e}"
    )

    cpu_options = networks.cpu_compiler_options()
    print(
        f"jax {jax.__version__} on {jax.default_backend()}, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), cpu_compiler_options() = {cpu_options}"
    )
    ConvVAE, MLPVAE = torch_models(torch)
    plain = GaussianVAE(PlainConvEncoder(), PlainConvDecoder())
    ours = GaussianVAE(networks.ConvEncoder(), networks.ConvDecoder())
    mlp = GaussianVAE(networks.MLPEncoder(), networks.MLPDecoder())
    c, m = args.conv_steps, args.mlp_steps
    runners = {
        "JAX conv, nn.Conv/nn.ConvTranspose": (jax_runner(plain, x, {}), c),
        "JAX conv, nn.Conv/nn.ConvTranspose + cpu options": (jax_runner(plain, x, cpu_options), c),
        "JAX conv, echo_jax.networks": (jax_runner(ours, x, {}), c),
        "JAX conv, echo_jax.networks + cpu options": (jax_runner(ours, x, cpu_options), c),
        "PyTorch eager conv": (torch_runner(torch, ConvVAE(), x_torch), c),
        "JAX MLP": (jax_runner(mlp, x, {}), m),
        "JAX MLP + cpu options": (jax_runner(mlp, x, cpu_options), m),
        "PyTorch eager MLP": (torch_runner(torch, MLPVAE(), x_torch), m),
    }
    times = time_interleaved(runners, args.repeats)

    best = {name: min(t) for name, t in times.items()}
    reference = {"conv": best["PyTorch eager conv"], "MLP": best["PyTorch eager MLP"]}
    print(
        f"\nbatch {BATCH}, Adam; min (median) over {args.repeats} interleaved blocks; "
        "epoch = 500 steps (the paper's protocol)"
    )
    print(f"| {'train step':50s} | {'ms/step':>16s} | {'examples/s':>10s} | {'s/epoch':>7s} | {'vs PyTorch':>10s} |")
    print(f"|{'-' * 52}|{'-' * 18}|{'-' * 12}|{'-' * 9}|{'-' * 12}|")
    for name, t in times.items():
        kind = "MLP" if "MLP" in name else "conv"
        ms, median = 1e3 * best[name], 1e3 * statistics.median(t)
        print(
            f"| {name:50s} | {ms:7.1f} ({median:6.1f}) | {BATCH / best[name]:10.0f} | "
            f"{500 * best[name]:7.1f} | {reference[kind] / best[name]:9.2f}x |"
        )


if __name__ == "__main__":
    main()
