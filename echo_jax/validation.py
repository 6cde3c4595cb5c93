"""One check of a whole experiment config, before anything is loaded or written.

`validate_config` raises `ConfigError` naming the first bad field, its value and the fix. Every field of
`echo_jax.defaults` with a valid range or set of values is checked here, so a run never starts with a
value that would fail later (or, worse, run and mean nothing). The sets of values are defaults.py's
(`defaults.CHOICES`), and so are the model's fields; `echo_jax.train.train_and_evaluate` validates once per run.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from echo_jax import defaults, identity
from echo_jax.errors import ConfigError

DSPRITES = ("dsprites", "dsprites_correlated")
_MODEL_FIELDS = tuple(defaults.rate_distortion_config().model.keys())
# The networks built for one image size: the paper's conv trunk for 28x28, disentanglement_lib's for 64x64.
NETWORK_IMAGE_SIZE = {"conv": 28, "dsprites": 64}


def image_size(dataset: str) -> int:
    return 64 if dataset in DSPRITES else 28


def check_encoder_marginal(encoder: str, marginal: str) -> None:
    """Raises ConfigError for an unknown or inconsistent encoder/marginal pair."""
    _choice("model.encoder", encoder)
    _choice("model.marginal", marginal)
    if (encoder == "echo") != (marginal == "none"):
        raise ConfigError(
            f"config.model.encoder = {encoder!r} with config.model.marginal = {marginal!r}: Echo's rate is exact "
            "and uses marginal='none'; the gaussian and iaf encoders need a marginal (std_normal, maf or vamp)"
        )


def require_config_dict(value: Any, what: str = "the config file") -> None:
    """Raises ConfigError unless `value` (what a config file's get_config returned) is a ConfigDict."""
    if not isinstance(value, ml_collections.ConfigDict):
        if type(value).__name__ == "_ErrorConfig":  # config_flags' stand-in for a file it could not load
            value.get("experiment")  # raises the load error it deferred, which the command line reports
        raise ConfigError(
            f"{what}'s get_config() returned a {type(value).__name__}, not an ml_collections.ConfigDict; make it "
            "return one"
        )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for the first field whose value the experiment cannot use.

    Args:
      config: a rate-distortion or disentanglement config (see `echo_jax.defaults`).
    """
    from echo_jax import data  # the dataset names (numpy, no jax: a bad config fails before jax is imported)

    require_config_dict(config)
    get = config.get
    _choice("experiment", get("experiment"))
    _choice("dataset", config.dataset, tuple(data.available()))
    _choice("data_source", get("data_source", "files"))
    if get("data_source") == "tfds" and config.dataset == "mnist_sample":
        raise ConfigError(
            "config.data_source = 'tfds': mnist_sample ships with echo-jax and has no tfds "
            "dataset; use data_source files"
        )
    if config.binarize:
        _choice("binarize", config.binarize, tuple(data.BINARIZATIONS))
    for name in ("num_train_examples", "num_test_examples"):
        _integer(name, get(name), minimum=0, fix="0 means the whole split")

    if "model" not in config:
        moved = sorted(set(config.keys()) & set(_MODEL_FIELDS))
        raise ConfigError(
            "the config has no model group"
            + (f" (it sets {', '.join(moved)} at the top level)" if moved else "")
            + ": the Autoencoder's fields live in config.model (e.g. config.model.encoder); "
            "start the config from echo_jax.defaults"
        )
    misplaced = sorted(set(config.keys()) & set(_MODEL_FIELDS))
    if misplaced:
        raise ConfigError(
            f"config.{misplaced[0]} is a field of the model: set config.model.{misplaced[0]} instead "
            "(the Autoencoder's fields live in config.model)"
        )
    _validate_model(config.model, config.dataset)
    _number("discriminator_learning_rate", config.discriminator_learning_rate, above=0)

    try:
        betas = identity.betas_of(config)
    except ValueError as e:
        raise ConfigError(f"config.betas = {config.betas!r}: {e}") from None
    repeated = sorted({b for b in betas if betas.count(b) > 1})
    if repeated:
        raise ConfigError(
            f"config.betas = {config.betas!r}: beta {repeated[0]:g} is listed twice; list each beta once "
            "(num_seeds trains several models per beta)"
        )
    for beta in betas:
        _number(
            "betas" if config.betas not in ("", None) else "beta",
            beta,
            minimum=0,
            fix="the objective is distortion + beta * rate",
        )
    _integer("num_seeds", config.num_seeds, minimum=1)
    _integer("seed", config.seed, minimum=0)
    if get("data_seed") is not None:
        _integer("data_seed", config.data_seed, minimum=0)

    if not isinstance(config.batch_size, int) or config.batch_size < 2:
        raise ConfigError(
            f"config.batch_size = {config.batch_size!r}: Echo noise is built from the other members of a batch "
            "and every model needs at least 2; use batch_size >= 2 (the paper uses 100)"
        )
    _integer("num_epochs", config.num_epochs, minimum=1)
    _integer("num_train_steps", config.num_train_steps, minimum=0, fix="0 means num_epochs full epochs")
    _number("learning_rate", config.learning_rate, above=0)
    _choice("lr_schedule", config.lr_schedule)
    _number("adam_eps", config.adam_eps, above=0)

    _integer("eval_every_epochs", config.eval_every_epochs, minimum=1)
    _integer("iwae_samples", config.iwae_samples, minimum=0, fix="0 skips the IWAE bound")
    _integer("log_every_steps", config.log_every_steps, minimum=1)
    _integer("checkpoint_every_steps", config.checkpoint_every_steps, minimum=0, fix="0 means every epoch")
    _integer("checkpoints_to_keep", get("checkpoints_to_keep", 1), minimum=1, fix="1 keeps the latest only")
    _choice("sweep_strategy", config.sweep_strategy)
    _integer("models_per_program", config.models_per_program, minimum=0, fix="0 fits as many as memory allows")
    _choice("data_loop", get("data_loop", "auto"))
    _integer("steps_per_call", get("steps_per_call", 100), minimum=1)
    if not isinstance(get("tensorboard", False), bool):
        raise ConfigError(f"config.tensorboard = {config.tensorboard!r}: must be True or False")
    if get("tensorboard"):
        from echo_jax import logs

        logs.require_tensorboardx()

    if config.experiment == "disentanglement":
        if config.dataset not in DSPRITES:
            raise ConfigError(
                f"config.dataset = {config.dataset!r}: the disentanglement metrics need dSprites' "
                "factors; use dsprites or dsprites_correlated"
            )
        _choice("representation", config.representation)
        for name in ("mig_points", "factor_vae_train", "factor_vae_eval", "factor_vae_variance_points"):
            _integer(name, get(name), minimum=1)
        selected_metrics(config)


def selected_metrics(config) -> tuple[str, ...]:
    """The metrics `config.metrics` asks for, in `defaults.METRICS` order.

    ``config.metrics`` is a comma-separated string (``"mig,dci"``) or a sequence of names; ``"all"`` is every
    metric; unset (``""``, or a config without the field) is `defaults.DEFAULT_METRICS`.

    Raises:
      ConfigError: for an unknown name, or a list that names none.
    """
    value = config.get("metrics") or ""
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else [str(n).strip() for n in value]
    names = [n for n in names if n]
    if not names:
        return defaults.DEFAULT_METRICS
    if names == ["all"]:
        return defaults.METRICS
    unknown = [n for n in names if n not in defaults.METRICS]
    if unknown:
        raise ConfigError(
            f"config.metrics = {value!r}: {unknown[0]!r} is not a metric; use a comma-separated list of "
            f"{', '.join(defaults.METRICS)}, or all"
        )
    return tuple(m for m in defaults.METRICS if m in names)


def _validate_model(model: ml_collections.ConfigDict, dataset: str) -> None:
    """The fields of ``config.model`` (what `echo_jax.model.Autoencoder` takes)."""
    _choice("model.network", model.network)
    needed = NETWORK_IMAGE_SIZE.get(model.network)
    if needed and needed != image_size(dataset):
        raise ConfigError(
            f"config.model.network = {model.network!r} is built for {needed}x{needed} images but dataset "
            f"{dataset!r} has {image_size(dataset)}x{image_size(dataset)}; use network "
            f"{'dsprites' if image_size(dataset) == 64 else 'conv'} or mlp"
        )
    _sizes("model.mlp_hidden", model.mlp_hidden)
    _integer("model.latent_dim", model.latent_dim, minimum=1)
    check_encoder_marginal(model.encoder, model.marginal)
    _choice("model.echo_activation", model.echo_activation)
    _number("model.echo_fx_bound", model.echo_fx_bound, above=0)
    clip = model.echo_clip
    if clip is not None and not (_finite(clip) and 0 < clip < 1):
        raise ConfigError(
            f"config.model.echo_clip = {clip!r}: the noise scale's bound must lie in (0, 1); leave "
            "it unset to solve it from the batch size"
        )
    _choice("model.echo_order", model.echo_order)
    _integer("model.flow_steps", model.flow_steps, minimum=1)
    _sizes("model.flow_hidden", model.flow_hidden)
    _integer("model.vamp_components", model.vamp_components, minimum=1)
    for name in ("mmd_weight", "tc_weight"):
        _number(f"model.{name}", model.get(name), minimum=0, fix="0 turns the penalty off")
    if model.mmd_bandwidth is not None:
        _number("model.mmd_bandwidth", model.mmd_bandwidth, above=0, fix="leave it unset for sqrt(D^2 / 2)")
    unknown = set(model.keys()) - set(_MODEL_FIELDS)
    if unknown:
        raise ConfigError(
            f"config.model.{sorted(unknown)[0]} is not a field of the Autoencoder; remove it "
            f"(the fields: {', '.join(_MODEL_FIELDS)})"
        )


def _choice(name: str, value: Any, choices: tuple | None = None) -> None:
    """`value` must be one of `choices`, by default the field's declared ones (`defaults.CHOICES`)."""
    choices = defaults.CHOICES[name] if choices is None else choices
    if value not in choices:
        raise ConfigError(f"config.{name} = {value!r} is not one of the choices; use one of {', '.join(choices)}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(name: str, value: Any, *, minimum: float | None = None, above: float | None = None, fix: str = "") -> None:
    if not _finite(value):
        raise ConfigError(f"config.{name} = {value!r}: needs a finite number")
    if minimum is not None and value < minimum:
        raise ConfigError(f"config.{name} = {value!r}: must be >= {minimum:g}" + (f" ({fix})" if fix else ""))
    if above is not None and value <= above:
        raise ConfigError(f"config.{name} = {value!r}: must be > {above:g}" + (f" ({fix})" if fix else ""))


def _integer(name: str, value: Any, *, minimum: int, fix: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"config.{name} = {value!r}: must be an integer >= {minimum}" + (f" ({fix})" if fix else ""))


def _sizes(name: str, value: Any) -> None:
    if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise ConfigError(f"config.{name} = {value!r}: needs one or more layer sizes >= 1, e.g. (500, 500)")
