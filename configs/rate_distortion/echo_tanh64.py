"""Echo noise with f = tanh(x/64) (the original README's default activation).

Full protocol (conv network, binarized MNIST, 200 epochs of batch 100):
    python -m experiments.rate_distortion --config configs/rate_distortion/echo_tanh64.py --workdir runs/echo_tanh64
Quick (MLP on the bundled mnist_sample, 5 epochs, CPU):
    python -m experiments.rate_distortion --config configs/rate_distortion/echo_tanh64.py:quick --workdir runs/echo_tanh64_quick
"""

from echo_jax.defaults import rate_distortion_config, variant


def get_config(arg=None):
    config = rate_distortion_config(quick=variant(arg))
    config.model.encoder = "echo"
    config.model.marginal = "none"
    config.model.echo_activation = "tanh64"
    return config
