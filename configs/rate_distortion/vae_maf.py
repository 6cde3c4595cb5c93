"""Gaussian encoder with a MAF marginal (4 shift-only steps, MADE [640, 640, 640]) trained jointly by
maximum likelihood on encoder samples; rate = -H(q(z|x)) - log m(z). The original config crashed
(it indexed a second density estimator that does not exist).

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/vae_maf.py --workdir runs/vae_maf
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/vae_maf.py:quick --workdir runs/vae_maf_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "gaussian"
    config.model.marginal = "maf"
    return config
