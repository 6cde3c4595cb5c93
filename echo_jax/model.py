"""The autoencoder: trunk + stochastic head + marginal + decoder, and its loss terms by name.

Rate estimators (per example, nats):

| encoder  | marginal     | rate                                                    |
|----------|--------------|---------------------------------------------------------|
| echo     | none         | exact: -sum_j (log c + log sigmoid a_j(x))              |
| gaussian | std_normal   | analytic KL(q(z|x) || N(0, I))                          |
| gaussian | maf / vamp   | -H(q(z|x)) - log m(z)      (one sample)                 |
| iaf      | std_normal   | log q(z|x) - log N(z; 0, I)  (one sample)               |
| iaf      | maf          | log q(z|x) - log m(z)        (one sample)               |
| iaf      | vamp         | log q(z0|x) - log m(z0), in the flow's base space       |

`Autoencoder.rate` reads like this table. Distortion is the Bernoulli negative log-likelihood summed over
pixels. The model returns its terms in a typed `ModelOutput`; `loss` combines them:
loss = distortion + beta * rate (+ mmd_weight * mmd + tc_weight * tc).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from echo_jax import heads, marginals, networks
from echo_jax.validation import check_encoder_marginal


@flax.struct.dataclass
class ModelOutput:
    """What the autoencoder computes for a batch; fields the configuration has no use for are None.

    Attributes:
      distortion: (B,) -log p(x | z), the Bernoulli negative log-likelihood summed over pixels.
      rate: (B,) the rate estimate of the table above.
      log_q: (B,) log q(z | x) of the sample (Gaussian and IAF encoders; in the flow's base space with vamp).
      log_p: (B,) log m(z) of the same sample under the marginal.
      mmd: () the MMD penalty (InfoVAE), when ``mmd_weight > 0``.
      tc: () the density-ratio estimate of the total correlation of z, when ``tc_weight > 0``.
      discriminator_loss: () the TC discriminator's own loss, when ``tc_weight > 0``.
    """

    distortion: jax.Array
    rate: jax.Array
    log_q: jax.Array | None = None
    log_p: jax.Array | None = None
    mmd: jax.Array | None = None
    tc: jax.Array | None = None
    discriminator_loss: jax.Array | None = None

    @property
    def log_p_x_given_z(self) -> jax.Array:
        return -self.distortion


class Autoencoder(nn.Module):
    """Trunk + stochastic head + marginal + decoder; ``config.model`` holds exactly these attributes.

    Attributes:
      image_shape: (H, W, C) of the data.
      network: ``"conv"`` (the paper's), ``"mlp"`` (fast on a CPU) or ``"dsprites"``.
      encoder: ``"echo"``, ``"gaussian"`` or ``"iaf"``.
      marginal: ``"none"`` (Echo), ``"std_normal"``, ``"maf"`` or ``"vamp"``.
      latent_dim: D.
      mlp_hidden: hidden sizes of the MLP network.
      echo_activation, echo_fx_bound, echo_clip, echo_order: see `heads.EchoHead` (echo_clip None:
        solved from the batch size).
      flow_steps, flow_hidden, flow_affine: the IAF posterior and the MAF marginal.
      vamp_components: K pseudo-inputs of the VampPrior.
      vamp_as_coded: the original's mean of component log-densities instead of the log-mixture.
      mmd_weight: weight of the MMD (InfoVAE) penalty, not multiplied by beta; 0 computes no MMD.
      mmd_bandwidth: kernel bandwidth of the MMD penalty; None uses sqrt(D^2 / 2).
      tc_weight: weight of the total-correlation penalty; > 0 adds a FactorVAE discriminator (Kim & Mnih
        2018) and its terms.
    """

    image_shape: Sequence[int]
    network: str = "conv"
    encoder: str = "echo"
    marginal: str = "none"
    latent_dim: int = 32
    mlp_hidden: Sequence[int] = (500, 500)
    echo_activation: str = "tanh16"
    echo_fx_bound: float = 1.0
    echo_clip: float | None = None
    echo_order: str = "independent"
    flow_steps: int = 4
    flow_hidden: Sequence[int] = (640, 640, 640)
    flow_affine: bool = False
    vamp_components: int = 750
    vamp_as_coded: bool = False
    mmd_weight: float = 0.0
    mmd_bandwidth: float | None = None
    tc_weight: float = 0.0

    def setup(self):
        check_encoder_marginal(self.encoder, self.marginal)
        if self.network == "mlp":
            self.trunk = networks.MLPEncoder(tuple(self.mlp_hidden))
            self.decoder = networks.MLPDecoder(tuple(self.mlp_hidden), tuple(self.image_shape))
        else:
            self.trunk, self.decoder = networks.make_trunks(self.network, tuple(self.image_shape))
        if self.encoder == "echo":
            self.head = heads.EchoHead(
                self.latent_dim, self.echo_activation, self.echo_fx_bound, self.echo_clip, self.echo_order
            )
        elif self.encoder == "gaussian":
            self.head = heads.GaussianHead(self.latent_dim)
        else:
            self.head = heads.IAFHead(self.latent_dim, self.flow_steps, tuple(self.flow_hidden), self.flow_affine)
        if self.marginal == "maf":
            self.maf = marginals.MAFMarginal(self.flow_steps, tuple(self.flow_hidden), self.flow_affine)
        if self.tc_weight > 0:
            self.discriminator = TCDiscriminator()
        if self.marginal == "vamp":
            # Filled with the training-data mean image by `init_vamp_pseudo_inputs`.
            self.pseudo_inputs = self.param(
                "pseudo_inputs", nn.initializers.constant(0.5), (self.vamp_components, *self.image_shape)
            )

    def encode(self, x: jax.Array) -> heads.HeadOutput:
        """The head's output for images x (B, H, W, C); z is a sample."""
        return self.head(self.trunk(x))

    def decode(self, z: jax.Array) -> jax.Array:
        """Bernoulli logits (B, H, W, C) for codes z (B, D)."""
        return self.decoder(z)

    def log_marginal(self, z: jax.Array) -> jax.Array:
        """log m(z) (B,) under the configured marginal (not defined for Echo, whose marginal is implicit)."""
        if self.marginal == "std_normal":
            return marginals.std_normal_log_prob(z)
        if self.marginal == "maf":
            return self.maf.log_prob(z)
        # VampPrior components: the (base) Gaussian posterior of each pseudo-input, same trunk and heads.
        means, log_vars = self.head.posterior_params(self.trunk(self.pseudo_inputs))
        return marginals.vamp_log_prob(z, means, log_vars, as_coded=self.vamp_as_coded)

    def rate(self, head: heads.HeadOutput) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """The rate of each example (the module docstring's table), with the sample's log q and log m
        (None for Echo).

        Returns:
          (rate, log_q, log_p), each (B,).
        """
        if self.encoder == "echo":
            return head.rate, None, None  # exact
        if self.encoder == "iaf" and self.marginal == "vamp":
            log_q, log_p = head.log_q_base, self.log_marginal(head.z0)  # the flow's base space
        else:
            log_q, log_p = head.log_q, self.log_marginal(head.z)
        if self.encoder == "gaussian" and self.marginal == "std_normal":
            return marginals.gaussian_kl_to_std_normal(head.mean, head.log_var), log_q, log_p  # analytic
        if self.encoder == "gaussian":
            return -marginals.gaussian_entropy(head.log_var) - log_p, log_q, log_p
        return log_q - log_p, log_q, log_p  # one sample

    def __call__(self, x: jax.Array) -> ModelOutput:
        """The loss terms (nats) of a batch x (B, H, W, C); see `ModelOutput`."""
        head = self.encode(x)
        logits = self.decode(head.z)
        distortion = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x).reshape(x.shape[0], -1), axis=-1)
        rate, log_q, log_p = self.rate(head)
        output = ModelOutput(distortion=distortion, rate=rate, log_q=log_q, log_p=log_p)
        if self.mmd_weight > 0:
            output = output.replace(mmd=marginals.mmd(self.make_rng("noise"), head.z, bandwidth=self.mmd_bandwidth))
        if self.tc_weight > 0:
            output = output.replace(**self._total_correlation_terms(head.z))
        return output

    def _total_correlation_terms(self, z: jax.Array) -> dict[str, jax.Array]:
        # The density-ratio estimate of TC(z) = KL(q(z) || prod_j q(z_j)) reaches the encoder; the
        # discriminator learns from detached samples of q(z) and of prod_j q(z_j) (each dimension shuffled
        # independently across the batch). `train_step` keeps the two gradients apart.
        keys = jax.random.split(self.make_rng("noise"), z.shape[1])
        z_perm = jax.vmap(lambda k, column: jax.random.permutation(k, column), in_axes=(0, 1), out_axes=1)(keys, z)
        logits = self.discriminator(z)
        tc = jnp.mean(logits[:, 0] - logits[:, 1])
        log_p_joint = _clipped_log_softmax(self.discriminator(jax.lax.stop_gradient(z)))[:, 0]
        log_p_product = _clipped_log_softmax(self.discriminator(jax.lax.stop_gradient(z_perm)))[:, 1]
        return {"tc": tc, "discriminator_loss": -jnp.mean(0.5 * log_p_joint + 0.5 * log_p_product)}


def _clipped_log_softmax(logits: jax.Array) -> jax.Array:
    # The original clips the probabilities to [1e-6, 1 - 1e-6].
    return jnp.log(jnp.clip(jax.nn.softmax(logits), 1e-6, 1 - 1e-6))


class TCDiscriminator(nn.Module):
    """FactorVAE's discriminator: 6 x Dense(1000, leaky ReLU 0.2), then 2 logits (joint, product)."""

    hidden_sizes: Sequence[int] = (1000,) * 6

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = z
        for size in self.hidden_sizes:
            h = nn.leaky_relu(nn.Dense(size, **heads.dense_init)(h), negative_slope=0.2)
        return nn.Dense(2, **heads.dense_init)(h)


def init_vamp_pseudo_inputs(params: dict, mean_image: jax.Array) -> dict:
    """Sets every VampPrior pseudo-input to the training-data mean image (the original's initialisation)."""
    if "pseudo_inputs" not in params:
        return params
    pseudo = jnp.broadcast_to(mean_image, params["pseudo_inputs"].shape).astype(params["pseudo_inputs"].dtype)
    return {**params, "pseudo_inputs": pseudo}


def loss(output: ModelOutput, beta: jax.Array, *, mmd_weight: float = 0.0, tc_weight: float = 0.0):
    """Batch-mean loss = distortion + beta * rate (+ mmd_weight * mmd + tc_weight * tc).

    Returns:
      The loss, and the batch-mean terms by name (``rate``, ``distortion``, ``neg_elbo``, ``loss`` and
      any penalty). The discriminator's own loss is reported but not part of ``loss``.
    """
    means = {"rate": jnp.mean(output.rate), "distortion": jnp.mean(output.distortion)}
    means["neg_elbo"] = means["rate"] + means["distortion"]
    total = means["distortion"] + beta * means["rate"]
    if output.mmd is not None:
        means["mmd"] = output.mmd
        total = total + mmd_weight * output.mmd
    if output.tc is not None:
        means["tc"], means["discriminator_loss"] = output.tc, output.discriminator_loss
        total = total + tc_weight * output.tc
    means["loss"] = total
    return total, means
