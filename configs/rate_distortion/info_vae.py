"""InfoVAE: Gaussian encoder, analytic KL, plus an MMD penalty to N(0, I) with weight 999 (not
multiplied by beta) and the original info_vae's bandwidth sqrt(D^2 / 2).

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/info_vae.py --workdir runs/info_vae
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/info_vae.py:quick --workdir runs/info_vae_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "gaussian"
    config.model.marginal = "std_normal"
    config.model.mmd_weight = 999.0
    return config
