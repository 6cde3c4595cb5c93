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

Distortion is the Bernoulli negative log-likelihood summed over pixels. The MMD (InfoVAE) penalty is a
separate term; loss = distortion + beta * rate + mmd_weight * mmd.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from echo_jax import encoders, marginals, networks
from echo_jax.validation import check_encoder_marginal

class Autoencoder(nn.Module):
    """An autoencoder whose loss terms are returned by name.

    Attributes:
      image_shape: (H, W, C) of the data.
      network: ``"conv"`` (the paper's), ``"mlp"`` (fast on a CPU) or ``"dsprites"``.
      encoder: ``"echo"``, ``"gaussian"`` or ``"iaf"``.
      marginal: ``"none"`` (Echo), ``"std_normal"``, ``"maf"`` or ``"vamp"``.
      latent_dim: D.
      mlp_hidden: hidden sizes of the MLP network.
      echo_activation, echo_fx_bound, echo_clip, echo_order: see `encoders.EchoHead`.
      flow_steps, flow_hidden, flow_affine: the IAF posterior and the MAF marginal.
      vamp_components: K pseudo-inputs of the VampPrior.
      vamp_as_coded: the original's mean of component log-densities instead of the log-mixture.
      mmd_bandwidth: kernel bandwidth of the MMD penalty; None uses sqrt(D^2 / 2).
      with_mmd: compute the MMD penalty term.
      with_discriminator: add a FactorVAE total-correlation discriminator (Kim & Mnih 2018) and its terms.
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
    mmd_bandwidth: float | None = None
    with_mmd: bool = False
    with_discriminator: bool = False

    def setup(self):
        check_encoder_marginal(self.encoder, self.marginal)
        if self.network == "mlp":
            self.trunk = networks.MLPEncoder(tuple(self.mlp_hidden))
            self.decoder = networks.MLPDecoder(tuple(self.mlp_hidden), tuple(self.image_shape))
        else:
            self.trunk, self.decoder = networks.make_trunks(self.network, tuple(self.image_shape))
        if self.encoder == "echo":
            self.head = encoders.EchoHead(
                self.latent_dim, self.echo_activation, self.echo_fx_bound, self.echo_clip, self.echo_order
            )
        elif self.encoder == "gaussian":
            self.head = encoders.GaussianHead(self.latent_dim)
        else:
            self.head = encoders.IAFHead(self.latent_dim, self.flow_steps, tuple(self.flow_hidden), self.flow_affine)
        if self.marginal == "maf":
            self.maf = marginals.MAFMarginal(self.flow_steps, tuple(self.flow_hidden), self.flow_affine)
        if self.with_discriminator:
            self.discriminator = TCDiscriminator()
        if self.marginal == "vamp":
            # Filled with the training-data mean image by `init_vamp_pseudo_inputs`.
            self.pseudo_inputs = self.param(
                "pseudo_inputs", nn.initializers.constant(0.5), (self.vamp_components, *self.image_shape)
            )

    def encode(self, x: jax.Array) -> encoders.HeadOutput:
        """The head's output for images x (B, H, W, C); z is a sample."""
        return self.head(self.trunk(x))

    def decode(self, z: jax.Array) -> jax.Array:
        """Bernoulli logits (B, H, W, C) for codes z (B, D)."""
        return self.decoder(z)

    def _log_marginal(self, z: jax.Array) -> jax.Array:
        if self.marginal == "std_normal":
            return marginals.std_normal_log_prob(z)
        if self.marginal == "maf":
            return self.maf.log_prob(z)
        # VampPrior components: the (base) Gaussian posterior of each pseudo-input, same trunk and heads.
        means, log_vars = self.head.posterior_params(self.trunk(self.pseudo_inputs))
        return marginals.vamp_log_prob(z, means, log_vars, as_coded=self.vamp_as_coded)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """Per-example loss terms (nats) for a batch x (B, H, W, C).

        Returns:
          ``distortion`` (B,), ``rate`` (B,), ``log_p_x_given_z`` (B,), and for the Gaussian and IAF
          encoders ``log_q`` and ``log_p`` (B,) of the sample (for importance weighting); ``mmd`` () when
          `with_mmd`; ``tc`` and ``discriminator_loss`` () when `with_discriminator`.
        """
        head = self.encode(x)
        logits = self.decode(head.z)
        distortion = jnp.sum(
            optax.sigmoid_binary_cross_entropy(logits, x).reshape(x.shape[0], -1), axis=-1
        )
        terms = {"distortion": distortion, "log_p_x_given_z": -distortion}
        if self.encoder == "echo":
            terms["rate"] = head.rate
        else:
            if self.encoder == "iaf" and self.marginal == "vamp":
                log_q, log_p = head.log_q_base, self._log_marginal(head.z0)  # compared in base space
            else:
                log_q, log_p = head.log_q, self._log_marginal(head.z)
            terms["log_q"], terms["log_p"] = log_q, log_p
            if self.encoder == "gaussian" and self.marginal == "std_normal":
                terms["rate"] = marginals.gaussian_kl_to_std_normal(head.mean, head.log_var)
            elif self.encoder == "gaussian":
                terms["rate"] = -marginals.gaussian_entropy(head.log_var) - log_p
            else:
                terms["rate"] = log_q - log_p
        if self.with_mmd:
            terms["mmd"] = marginals.mmd(self.make_rng("noise"), head.z, bandwidth=self.mmd_bandwidth)
        if self.with_discriminator:
            terms.update(self._total_correlation_terms(head.z))
        return terms

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
            h = nn.leaky_relu(nn.Dense(size, **encoders.dense_init)(h), negative_slope=0.2)
        return nn.Dense(2, **encoders.dense_init)(h)


def init_vamp_pseudo_inputs(params: dict, mean_image: jax.Array) -> dict:
    """Sets every VampPrior pseudo-input to the training-data mean image (the original's initialisation)."""
    if "pseudo_inputs" not in params:
        return params
    pseudo = jnp.broadcast_to(mean_image, params["pseudo_inputs"].shape).astype(params["pseudo_inputs"].dtype)
    return {**params, "pseudo_inputs": pseudo}


def loss_from_terms(
    terms: dict[str, jax.Array], beta: jax.Array, *, mmd_weight: float = 0.0, tc_weight: float = 0.0
):
    """Batch-mean loss = distortion + beta * rate (+ mmd_weight * mmd + tc_weight * tc).

    Returns:
      The loss, and the batch-mean terms by name (``rate``, ``distortion``, ``neg_elbo``, ``loss`` and
      any penalty). The discriminator's own loss is reported but not part of ``loss``.
    """
    means = {
        "rate": jnp.mean(terms["rate"]),
        "distortion": jnp.mean(terms["distortion"]),
    }
    means["neg_elbo"] = means["rate"] + means["distortion"]
    loss = means["distortion"] + beta * means["rate"]
    if "mmd" in terms:
        means["mmd"] = terms["mmd"]
        loss = loss + mmd_weight * terms["mmd"]
    if "tc" in terms:
        means["tc"], means["discriminator_loss"] = terms["tc"], terms["discriminator_loss"]
        loss = loss + tc_weight * terms["tc"]
    means["loss"] = loss
    return loss, means
