"""IAF encoder with a standard normal prior plus the MMD penalty (weight 999). The original used
bandwidth 0.01, under which the penalty is a constant ~2/B with no gradient; here the bandwidth is the
info_vae one. config.model.mmd_bandwidth = 0.01 reproduces the original.

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/iaf_prior_mmd.py --workdir runs/iaf_prior_mmd
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/iaf_prior_mmd.py:quick --workdir runs/iaf_prior_mmd_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "iaf"
    config.model.marginal = "std_normal"
    config.model.mmd_weight = 999.0
    return config
