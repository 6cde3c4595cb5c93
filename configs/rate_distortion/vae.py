"""Gaussian encoder with a standard normal prior and the analytic KL (a beta-VAE).

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/vae.py --workdir runs/vae
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/vae.py:quick --workdir runs/vae_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "gaussian"
    config.model.marginal = "std_normal"
    return config
