"""Gaussian encoder with a VampPrior marginal: 750 trainable pseudo-inputs, initialised to the
training mean image, a true log-mixture (config.model.vamp_as_coded = True gives the original's mean of
component log-densities). The rate uses the decoder's own sample z (the original drew a second one).

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/vae_vamp.py --workdir runs/vae_vamp
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/vae_vamp.py:quick --workdir runs/vae_vamp_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "gaussian"
    config.model.marginal = "vamp"
    return config
