"""Echo noise with a linear f clipped to +-10 (c = 0.8175). The original config crashed (it named
the activation 'tensorflow.keras.linear'); this is what it meant.

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/echo_linear.py --workdir runs/echo_linear
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/echo_linear.py:quick --workdir runs/echo_linear_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "echo"
    config.model.marginal = "none"
    config.model.echo_activation = "linear"
    config.model.echo_fx_bound = 10.0
    return config
