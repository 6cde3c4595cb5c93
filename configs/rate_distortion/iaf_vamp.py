"""IAF encoder with a VampPrior compared in the flow's base space, as in the original:
rate = log q(z0|x) - log vamp(z0), where the components are the base Gaussians of the pseudo-inputs.

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/iaf_vamp.py --workdir runs/iaf_vamp
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/iaf_vamp.py:quick --workdir runs/iaf_vamp_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "iaf"
    config.model.marginal = "vamp"
    return config
