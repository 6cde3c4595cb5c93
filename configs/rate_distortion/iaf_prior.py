"""IAF encoder (4 shift-only steps, MADE [640, 640, 640], no x-context) with a standard normal prior;
rate = log q(z|x) - log N(z; 0, I), one sample.

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/iaf_prior.py --workdir runs/iaf_prior
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/iaf_prior.py:quick --workdir runs/iaf_prior_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "iaf"
    config.model.marginal = "std_normal"
    return config
