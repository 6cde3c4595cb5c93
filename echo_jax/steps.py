"""The pure pieces of training: the train state, the model of a config, the optimiser and its schedule, and
the train and evaluation steps. Nothing here touches files or loops; `echo_jax.train` runs these.

beta and the learning rate are traced values, so one compiled step serves every beta of a sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from echo_jax import model as model_lib


@flax.struct.dataclass
class TrainState:
    """Everything a model's training needs; a pytree, so states stack on a leading (beta) axis.

    Attributes:
      step: number of updates done.
      params: the model's parameters.
      opt_state: the optimizer's state.
      key: the model's base PRNG key; step t uses fold_in(key, t).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array


def make_model(config: ml_collections.ConfigDict, image_shape: tuple[int, ...]) -> model_lib.Autoencoder:
    """``Autoencoder(image_shape, **config.model)``, sequences as tuples (a JSON round trip makes lists)."""
    fields = {name: tuple(v) if isinstance(v, list) else v for name, v in config.model.to_dict().items()}
    return model_lib.Autoencoder(image_shape=tuple(image_shape), **fields)


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """The run's number of updates: ``num_train_steps``, or ``num_epochs`` full epochs when it is 0."""
    return config.num_train_steps or steps_per_epoch * config.num_epochs


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """The per-epoch learning rate over the run's updates, as a function of the (traced) update count.

    The run lasts T = `total_train_steps` updates, E = T / steps_per_epoch epochs (``num_epochs`` unless
    ``num_train_steps`` sets T, then possibly fractional), and the rate changes once an epoch
    (epoch = count // steps_per_epoch):

    - constant: lr.
    - linear_decay: lr while epoch <= E/2, then lr * (E - epoch) / (E - E/2), reaching 0 at update T
      ("Fixing a Broken ELBO").
    - as_coded: the original alemi_lr_sched, lr * (1 - (E - epoch) / (E/2)) after E/2: it drops to lr / 100
      at epoch E/2 + 1 (E = 200) and climbs back to lr at update T.

    From update T on the rate stays at its value at T (0 for linear_decay), so it is >= 0 at every count:
    defined over num_epochs alone, a longer num_train_steps ran linear_decay below 0 (gradient ascent).
    With num_train_steps = 0 every rate equals, to the float32 bit, the schedule the committed results
    were trained with (tests/test_steps.py); that is why the decay is written out here rather than as
    optax.linear_schedule, whose arithmetic rounds differently.

    Args:
      config: its learning_rate, lr_schedule, num_epochs and num_train_steps.
      steps_per_epoch: updates in one epoch (the number of training batches).

    Returns:
      An optax schedule: update count -> float32 learning rate.
    """
    base = config.learning_rate
    if config.lr_schedule == "constant":
        return lambda count: jnp.full((), base, jnp.float32)
    total_steps = total_train_steps(config, steps_per_epoch)
    total = total_steps / steps_per_epoch  # exactly num_epochs when num_train_steps is 0
    half = total / 2

    def by_epoch(count):
        epoch = count // steps_per_epoch
        if config.lr_schedule == "linear_decay":
            late = base * (total - epoch) / (total - half)
        else:
            late = base * (1.0 - (total - epoch) / half)
        return jnp.where(epoch <= half, base, late).astype(jnp.float32)

    end = 0.0 if config.lr_schedule == "linear_decay" else base  # by_epoch's value at epoch E
    schedule = optax.join_schedules([by_epoch, optax.constant_schedule(end)], [total_steps])
    return lambda count: jnp.asarray(schedule(count), jnp.float32)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam (b1 0.9, b2 0.999, eps from the config: Keras's 1e-7 in the original); the TC discriminator,
    when there is one, has its own Adam (lr discriminator_learning_rate, b1 0.5), as in FactorVAE."""
    adam = optax.adam(learning_rate_schedule(config, steps_per_epoch), b1=0.9, b2=0.999, eps=config.adam_eps)
    if config.model.tc_weight <= 0:
        return adam
    discriminator_adam = optax.adam(config.discriminator_learning_rate, b1=0.5, b2=0.999, eps=config.adam_eps)
    labels = lambda params: {k: "discriminator" if k == "discriminator" else "model" for k in params}
    return optax.multi_transform({"model": adam, "discriminator": discriminator_adam}, labels)


def create_train_state(
    model: model_lib.Autoencoder,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    sample_batch: jax.Array,
    mean_image: jax.Array,
) -> TrainState:
    """A fresh TrainState for one model (vmap it over keys for several)."""
    init_key, noise_key, run_key = jax.random.split(key, 3)
    params = model.init({"params": init_key, "noise": noise_key}, sample_batch)["params"]
    params = model_lib.init_vamp_pseudo_inputs(params, mean_image)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), key=run_key)


def make_train_step(model: model_lib.Autoencoder, optimizer: optax.GradientTransformation) -> Callable:
    """Pure train step ``(state, batch, beta) -> (state, metrics)``; jit or vmap it as needed.

    With a total-correlation discriminator, one forward pass serves two gradients: the model's loss for
    everything but the discriminator, and the discriminator's own loss for the discriminator.
    """

    def train_step(state: TrainState, batch: jax.Array, beta: jax.Array):
        noise_key = jax.random.fold_in(state.key, state.step)

        def losses(params):
            output = model.apply({"params": params}, batch, rngs={"noise": noise_key})
            loss, metrics = model_lib.loss(output, beta, mmd_weight=model.mmd_weight, tc_weight=model.tc_weight)
            discriminator_loss = jnp.zeros(()) if output.discriminator_loss is None else output.discriminator_loss
            return (loss, discriminator_loss), metrics

        (loss, discriminator_loss), backward, metrics = jax.vjp(losses, state.params, has_aux=True)
        (grads,) = backward((jnp.ones_like(loss), jnp.zeros_like(discriminator_loss)))
        if model.tc_weight > 0:
            (discriminator_grads,) = backward((jnp.zeros_like(loss), jnp.ones_like(discriminator_loss)))
            grads = {**grads, "discriminator": discriminator_grads["discriminator"]}
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_eval_step(model: model_lib.Autoencoder, *, iwae_samples: int = 0) -> Callable:
    """Pure evaluation on one batch ``(params, batch, key, beta) -> summed terms`` (sums, not means)."""

    def eval_step(params, batch, key, beta):
        output = model.apply({"params": params}, batch, rngs={"noise": key})
        _, means = model_lib.loss(output, beta, mmd_weight=model.mmd_weight, tc_weight=model.tc_weight)
        sums = {name: value * batch.shape[0] for name, value in means.items()}
        if iwae_samples and output.log_q is not None:
            # log p(x) >= E log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x) (Burda et al. 2016).
            def log_weights(k):
                sample = model.apply({"params": params}, batch, rngs={"noise": k})
                return sample.log_p_x_given_z + sample.log_p - sample.log_q

            logw = jax.lax.map(log_weights, jax.random.split(jax.random.fold_in(key, 1), iwae_samples))
            bound = jax.scipy.special.logsumexp(logw, axis=0) - jnp.log(iwae_samples)
            sums["iwae_nll"] = -jnp.sum(bound)
        return sums

    return eval_step
