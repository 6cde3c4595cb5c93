"""Trained models you can open: parameter files, their sidecars, and `load_run`.

Every finished run writes, per model, a directory holding

- ``params.safetensors``: the model's parameters (``params/<module path>``, no optimizer state) and a reference
  batch of training images (``reference_images``, the first training batch: what Echo's noise is built from
  when the model encodes or samples outside training), in the safetensors format (no pickle);
- ``params.json``: its sidecar: the resolved single-model config, the run's identity key, the commit it was
  trained at, the dataset, the test (and training-split) terms and the sha256 of the parameters file.

A sweep's work directory holds one such directory per model, ``models/beta<b>_seed<s>/``; a campaign run's
results folder holds one when the campaign keeps its parameters (the model zoo). `load_run` opens any of them.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from echo_jax import steps
from echo_jax.errors import UserError
from echo_jax.files import write_atomic

FORMAT = "echo-jax-model"
VERSION = 1
PARAMS_FILE = "params.safetensors"
SIDECAR_FILE = "params.json"
MODELS_DIR = "models"


class RunFileError(UserError):
    """A path that is not a run, a damaged or foreign parameters file, or a model choice that does not exist."""


def model_dir_name(beta: float, seed: int) -> str:
    """The directory of one model of a sweep under ``models/``."""
    return f"beta{beta:g}_seed{seed}"


# ----------------------------------------------------------------------------------------------- writing


def save_model(
    directory: str,
    params: Any,
    *,
    config: ml_collections.ConfigDict,
    image_shape: tuple[int, ...],
    reference_images: np.ndarray,
    info: dict,
) -> str:
    """Writes ``params.safetensors`` and its sidecar ``params.json`` into `directory` (each atomically, the
    sidecar last, so a sidecar always describes a complete parameters file).

    Args:
      directory: created if missing.
      params: the model's parameter pytree (one model, no model axis).
      config: the resolved single-model config (one beta, one seed).
      image_shape: (H, W, C) the model was built for.
      reference_images: (B, H, W, C) a batch of training images in [0, 1].
      info: more sidecar fields (key, commit, test and train terms...).

    Returns:
      The sidecar's path.
    """
    from safetensors.numpy import save

    tensors = {f"params/{name}": np.asarray(v) for name, v in traverse_util.flatten_dict(params, sep="/").items()}
    tensors["reference_images"] = np.asarray(np.round(np.asarray(reference_images) * 255), np.uint8)
    content = save(tensors)
    os.makedirs(directory, exist_ok=True)
    write_atomic(os.path.join(directory, PARAMS_FILE), content)
    sidecar = {
        "format": FORMAT,
        "version": VERSION,
        "params_file": PARAMS_FILE,
        "sha256": hashlib.sha256(content).hexdigest(),
        "beta": float(config.beta),
        "seed": int(config.seed),
        "dataset": config.dataset,
        "image_shape": list(image_shape),
        "batch_size": int(config.batch_size),
        **info,
        "config": json.loads(config.to_json_best_effort()),
    }
    path = os.path.join(directory, SIDECAR_FILE)
    write_atomic(path, json.dumps(sidecar, indent=2, allow_nan=False) + "\n")
    return path


# ----------------------------------------------------------------------------------------------- the model


class Encoding(NamedTuple):
    """What `TrainedModel.encode` returns for images x (N, H, W, C).

    Attributes:
      location: (N, D) the encoder's location: f(x) for Echo, the posterior (base) mean otherwise.
      log_scale: (N, D) the log noise scale per dimension: log S(x) for Echo (at most log c), log sigma(x)
        of the Gaussian (base) posterior otherwise.
      z: (N, D) a sample of q(z | x).
    """

    location: jax.Array
    log_scale: jax.Array
    z: jax.Array


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained autoencoder read back from its parameters file (see `load_run`).

    Attributes:
      config: the resolved single-model config it was trained with.
      model: the `echo_jax.model.Autoencoder` (Echo's clip fixed to its training value).
      params: its parameters.
      reference_images: (B, H, W, C) a training batch: Echo's noise outside training is built from these.
      info: the sidecar (key, commit, test terms, ...).
      path: the directory it was read from.
    """

    config: ml_collections.ConfigDict
    model: Any
    params: Any
    reference_images: np.ndarray
    info: dict
    path: str

    @property
    def beta(self) -> float:
        return float(self.config.beta)

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    @property
    def key(self) -> str | None:
        """The run's identity key (`echo_jax.identity.run_key`)."""
        return self.info.get("key")

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.info["image_shape"])

    @property
    def latent_dim(self) -> int:
        return int(self.model.latent_dim)

    def __repr__(self) -> str:
        m = self.model
        return (
            f"TrainedModel({m.encoder}/{m.marginal} {m.network}, D={m.latent_dim}, beta={self.beta:g}, "
            f"seed={self.seed}, {self.config.dataset}, key={self.key}, from {self.path})"
        )

    # ------------------------------------------------------------------------------------------- the maps

    def _head(self, x: jax.Array, key: jax.Array):
        return _apply(self.model, self.params, "encode", jnp.asarray(x, jnp.float32), key=key)

    def encode(self, x, key: jax.Array) -> Encoding:
        """Location, log scale and a sample z of q(z | x) for images x (N, H, W, C) in [0, 1].

        Echo's z = f(x) + S(x) * eps takes eps from the aggregate posterior, built from the encodings of the
        reference training batch (`echo_noise`), never from x itself or the other rows of x: so any N works,
        one image included, and the code of an image does not depend on what it is encoded with.
        """
        x = jnp.asarray(x, jnp.float32)
        if self.model.encoder != "echo":
            head = self._head(x, key)
            return Encoding(head.mean, head.log_scale, head.z)
        # The head samples z from its own batch, which needs two rows: encode beside the reference batch and
        # keep x's rows (location and scale are per-example functions of x).
        head = self._head(jnp.concatenate([x, jnp.asarray(self.reference_images, jnp.float32)]), key)
        location, log_scale = head.mean[: x.shape[0]], head.log_scale[: x.shape[0]]
        eps = self.echo_noise(x.shape[0], key)
        return Encoding(location, log_scale, location + jnp.exp(log_scale) * eps)

    def echo_noise(self, n: int, key: jax.Array) -> jax.Array:
        """(n, D) draws of Echo noise, i.e. of the aggregate posterior q(z), built from the encodings of the
        reference training batch: draw k is f(x_1) + S(x_1) f(x_2) + ... over the *other* reference images
        in a random order (`echo_jax.noise.echo_sample` with ``return_noise=True``)."""
        if self.model.encoder != "echo":
            raise ValueError("echo_noise: only Echo models have Echo noise; use sample() for the others")
        from echo_jax import noise

        reference = jnp.asarray(self.reference_images, jnp.float32)
        head = self._head(reference, jax.random.fold_in(key, 0))
        clip = self.model.echo_clip
        log_s = head.log_scale - jnp.log(clip)
        rounds = math.ceil(n / reference.shape[0])
        draws = [
            noise.echo_sample(
                jax.random.fold_in(key, r + 1),
                head.mean,
                log_s,
                clip=clip,
                return_noise=True,
                order=self.model.echo_order,
            )
            for r in range(rounds)
        ]
        return jnp.concatenate(draws)[:n]

    def decode(self, z) -> jax.Array:
        """Bernoulli logits (N, H, W, C) of codes z (N, D)."""
        return _apply(self.model, self.params, "decode", jnp.asarray(z, jnp.float32))

    def reconstruct(self, x, key: jax.Array) -> jax.Array:
        """Bernoulli means (N, H, W, C) of the decoded sample z ~ q(z | x)."""
        return jax.nn.sigmoid(self.decode(self.encode(x, key).z))

    def sample(self, n: int, key: jax.Array) -> jax.Array:
        """Bernoulli means (n, H, W, C) of codes drawn from the model's marginal.

        Gaussian and IAF encoders: from the marginal they were trained against (N(0, I), the MAF, or the
        VampPrior's mixture; with the VampPrior and an IAF posterior, through the flow). Echo has no prior: its
        codes come from the aggregate posterior q(z), i.e. Echo noise built from the encodings of the reference
        batch of training images (`echo_noise`).
        """
        model = self.model
        if model.encoder == "echo":
            z = self.echo_noise(n, key)
        elif model.marginal == "std_normal":
            z = jax.random.normal(key, (n, model.latent_dim))
        elif model.marginal == "maf":
            z = _apply(model, self.params, lambda m, k: m.maf.sample(k, n, m.latent_dim), key)
        else:  # vamp: a pseudo-input's posterior, pushed through the flow for an IAF encoder
            z = _apply(model, self.params, _vamp_sample, key, n=n)
        return jax.nn.sigmoid(self.decode(z))

    def rate_per_dim(self, x, *, key: jax.Array | None = None) -> np.ndarray:
        """(D,) nats per latent dimension, averaged over images x: Echo's exact -E log S_j(x); a Gaussian
        encoder's KL(q(z_j | x) || N(0, 1)). Other encoder/marginal pairs have no per-dimension rate (the
        marginal or the flow couples the dimensions): ValueError."""
        from echo_jax import diagnostics

        encoding = self.encode(x, jax.random.PRNGKey(0) if key is None else key)
        if self.model.encoder == "echo":
            return diagnostics.echo_rate_per_dim(encoding.log_scale)
        if self.model.encoder == "gaussian" and self.model.marginal == "std_normal":
            return diagnostics.gaussian_kl_per_dim(encoding.location, 2 * encoding.log_scale)
        raise ValueError(
            f"rate_per_dim: a {self.model.encoder} encoder with the {self.model.marginal} marginal has no "
            "per-dimension rate (the rate does not decompose over dimensions)"
        )

    def evaluate(
        self,
        split: str = "test",
        *,
        key: jax.Array | None = None,
        data_dir: str | None = None,
        iwae_samples: int | None = None,
    ) -> dict:
        """The mean terms over `split` as results.json records them (``rate``, ``distortion``, ``neg_elbo``,
        ``loss`` and, where the config asks for one, ``iwae_nll``): the same batches, evaluation step and
        noise key (default: the run's, PRNGKey(data_seed + 12), folded with the batch index), so the
        numbers are deterministic for a fixed key and match the run's own.

        Loads the dataset (from `data_dir`, else the config's, else ``$ECHO_JAX_DATA_DIR`` or the cache).
        `iwae_samples` overrides the config's IWAE bound size (0: no bound, much faster).
        """
        from echo_jax import data as data_lib
        from echo_jax import sweep
        from echo_jax.identity import data_seed_of
        from echo_jax.train import load_datasets

        config = self.config.copy_and_resolve_references()
        if data_dir is not None:
            config.data_dir = data_dir
        train_set, test_set = load_datasets(config)
        dataset = {"train": train_set, "test": test_set}.get(split)
        if dataset is None:
            raise ValueError(f"evaluate: split must be 'train' or 'test', got {split!r}")
        iwae = config.iwae_samples if iwae_samples is None else iwae_samples
        iwae = iwae if self.model.encoder != "echo" and split == "test" else 0
        step = jax.jit(
            steps.make_eval_step(self.model, iwae_samples=iwae), compiler_options=sweep.cpu_compiler_options()
        )
        key = jax.random.PRNGKey(data_seed_of(config) + 12) if key is None else key
        beta = jnp.asarray(self.beta, jnp.float32)
        totals, count = None, 0
        for i, batch in enumerate(data_lib.eval_batches(dataset, config.batch_size)):
            sums = step(self.params, jnp.asarray(batch), jax.random.fold_in(key, i), beta)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
            count += batch.shape[0]
        return {name: float(value) / count for name, value in totals.items()}


def describe(trained: TrainedModel, images, key: jax.Array) -> list[str]:
    """A run's summary in lines: its config in one line, its test terms (from its sidecar), the rate per
    dimension over `images` and how many dimensions are active (encoder location varying by more than 0.01)."""
    from echo_jax import diagnostics

    c, m = trained.config, trained.model
    network = f"mlp {list(m.mlp_hidden)}" if m.network == "mlp" else m.network
    length = f"{c.num_train_steps} steps" if c.num_train_steps else f"{c.num_epochs} epochs"
    lines = [
        f"{trained.path}: {m.encoder}/{m.marginal}, {network}, D={m.latent_dim}, {c.dataset}, beta={trained.beta:g}, "
        f"seed={trained.seed}, batch {c.batch_size}, lr {c.learning_rate:g} ({c.lr_schedule}), "
        f"{length}; key {trained.key}, commit {trained.info.get('commit')}",
    ]
    for split in ("test", "train"):
        if split in trained.info:
            terms = trained.info[split]
            lines.append(f"{split}: " + "  ".join(f"{k} {terms[k]:.2f}" for k in sorted(terms)) + " (nats)")
    encoding = trained.encode(images, key)
    active = diagnostics.active_units(encoding.location)
    try:
        rates = trained.rate_per_dim(images, key=key)
    except ValueError as e:
        lines.append(f"rate per dimension: {e}")
    else:
        order = np.argsort(rates)[::-1]
        lines.append(
            f"rate per dimension over {len(images)} test images (nats, sorted): "
            + " ".join(f"{rates[j]:.2f}" for j in order)
        )
        if m.encoder == "echo":
            floor = diagnostics.echo_floor(m.echo_clip)
            at_floor = diagnostics.dims_at_floor(rates, m.echo_clip)
            lines.append(
                f"Echo's floor: -log c = {floor:.3f} nats a dimension, {floor * m.latent_dim:.2f} in all "
                f"({100 * floor * m.latent_dim / float(np.sum(rates)):.0f}% of the rate); {at_floor} of "
                f"{m.latent_dim} dimensions at the floor"
            )
    lines.append(f"active dimensions (Var_x of the encoder location > 0.01): {active} of {m.latent_dim}")
    return lines


def _apply(model, params, method, *inputs, key: jax.Array | None = None, **kwargs):
    """``model.apply`` of one method (a name, or a function of the bound module) with `key` as the noise."""
    rngs = {} if key is None else {"noise": key}
    return model.apply({"params": params}, *inputs, rngs=rngs, method=method, **kwargs)


def _vamp_sample(module, key: jax.Array, *, n: int) -> jax.Array:
    """n codes of the VampPrior: a uniformly chosen pseudo-input's (base) posterior, then the IAF if any."""
    means, log_vars = module.head.posterior_params(module.trunk(module.pseudo_inputs))
    pick_key, noise_key = jax.random.split(key)
    k = jax.random.randint(pick_key, (n,), 0, means.shape[0])
    z0 = means[k] + jnp.exp(0.5 * log_vars[k]) * jax.random.normal(noise_key, (n, means.shape[1]))
    if module.encoder == "iaf":
        return module.head.iaf(z0)[0]
    return z0


# ----------------------------------------------------------------------------------------------- reading


def load_run(path: str, *, beta: float | None = None, seed: int | None = None) -> TrainedModel:
    """Opens a trained model: a model directory (a campaign run's results folder, a zoo entry, or
    ``models/beta<b>_seed<s>/`` of a work directory), its ``params.json``, or a work directory, where `beta`
    and `seed` choose among its models.

    Bad input gets one line naming the file and what was expected (`RunFileError`); nothing is written.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        if os.path.basename(path) not in (SIDECAR_FILE, PARAMS_FILE):
            raise RunFileError(f"{path} is not a model's {SIDECAR_FILE} or {PARAMS_FILE}")
        path = os.path.dirname(path) or "."
    if not os.path.isdir(path):
        raise RunFileError(f"{path}: no such run directory")
    if os.path.isfile(os.path.join(path, SIDECAR_FILE)):
        model = _read_model(path)
        _check_choice(model, beta, seed, path)
        return model
    models = sorted(glob.glob(os.path.join(path, MODELS_DIR, "*", SIDECAR_FILE)))
    if not models:
        raise RunFileError(
            f"{path} is not a run: it has no {SIDECAR_FILE} and no {MODELS_DIR}/ folder of models (a run writes them "
            "when it finishes; runs of echo-jax 0.2 and earlier kept no parameters)"
        )
    sidecars = {m: _read_sidecar(os.path.dirname(m)) for m in models}
    chosen = [
        m
        for m, s in sidecars.items()
        if (beta is None or math.isclose(s["beta"], float(beta), rel_tol=1e-9)) and (seed is None or s["seed"] == seed)
    ]
    if len(chosen) != 1:
        there = ", ".join(f"beta={s['beta']:g} seed={s['seed']}" for s in sidecars.values())
        asked = f"beta={beta} seed={seed}"
        problem = "matches several models" if chosen else "matches no model"
        raise RunFileError(f"{path}: {asked} {problem}; it holds {there} (choose with beta= and seed=)")
    return _read_model(os.path.dirname(chosen[0]))


def _check_choice(model: TrainedModel, beta, seed, path: str) -> None:
    if (beta is not None and not math.isclose(model.beta, float(beta), rel_tol=1e-9)) or (
        seed is not None and model.seed != seed
    ):
        raise RunFileError(f"{path} holds the model beta={model.beta:g} seed={model.seed}, not beta={beta} seed={seed}")


def _read_sidecar(directory: str) -> dict:
    path = os.path.join(directory, SIDECAR_FILE)
    try:
        with open(path) as f:
            sidecar = json.load(f)
    except (OSError, ValueError) as e:
        raise RunFileError(f"{path} cannot be read as JSON ({e}); rewrite it by rerunning the run") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise RunFileError(f'{path} is not an echo-jax model sidecar (expected "format": "{FORMAT}")')
    if sidecar.get("version") != VERSION:
        raise RunFileError(
            f"{path} has sidecar version {sidecar.get('version')!r}; this echo-jax reads version {VERSION}: "
            "use the echo-jax release that wrote it"
        )
    missing = [k for k in ("sha256", "config", "image_shape", "beta", "seed") if k not in sidecar]
    if missing:
        raise RunFileError(f"{path} lacks the field(s) {', '.join(missing)}; expected a complete sidecar")
    return sidecar


def _read_model(directory: str) -> TrainedModel:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    sidecar = _read_sidecar(directory)
    params_path = os.path.join(directory, sidecar.get("params_file", PARAMS_FILE))
    try:
        with open(params_path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise RunFileError(f"{params_path} cannot be read ({e.strerror}); expected the parameters file") from None
    digest = hashlib.sha256(content).hexdigest()
    if digest != sidecar["sha256"]:
        raise RunFileError(
            f"{params_path} has sha256 {digest[:12]}..., its sidecar expects {sidecar['sha256'][:12]}...: the file "
            "is damaged or not this run's"
        )
    try:
        tensors = load(content)
    except SafetensorError as e:
        raise RunFileError(f"{params_path} is not a safetensors file ({e})") from None
    flat = {name[len("params/") :]: v for name, v in tensors.items() if name.startswith("params/")}
    params = traverse_util.unflatten_dict(flat, sep="/")
    config = ml_collections.ConfigDict(sidecar["config"])
    model = steps.make_model(config, tuple(sidecar["image_shape"]))
    if model.encoder == "echo" and model.echo_clip is None:
        from echo_jax.diagnostics import echo_clip_of

        # Fixed to its training value, so that encoding a batch of another size uses the same channel.
        model = model.clone(echo_clip=echo_clip_of(model, int(sidecar["batch_size"])))
    reference = np.asarray(tensors["reference_images"], np.float32) / 255.0
    return TrainedModel(config, model, params, reference, sidecar, directory)
