"""IAF encoder with a MAF marginal; rate = log q(z|x) - log m(z), one sample.

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/iaf_maf.py --workdir runs/iaf_maf
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/iaf_maf.py:quick --workdir runs/iaf_maf_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "iaf"
    config.model.marginal = "maf"
    return config
