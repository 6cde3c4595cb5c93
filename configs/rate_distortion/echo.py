"""Echo noise autoencoder, the paper's model: f = tanh(x/16), s = c * sigmoid(.), exact rate.

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/echo.py --workdir runs/echo
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/echo.py:quick --workdir runs/echo_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "echo"
    config.model.marginal = "none"
    return config
