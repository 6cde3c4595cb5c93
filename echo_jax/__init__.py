"""echo-jax: Echo noise autoencoders in JAX/Flax.

Echo noise (Brekelmans et al., NeurIPS 2019) is z = f(x) + S(x) * eps, where eps is built from the
encodings of other data points, so that the rate I(X;Z) = -E log|det S(x)| is exact.
"""

from echo_jax.noise import (
    echo_clip,
    echo_rate,
    echo_sample,
    linear_clipped,
    tanh16,
    tanh64,
)

__version__ = "0.1.0"

__all__ = [
    "echo_clip",
    "echo_rate",
    "echo_sample",
    "linear_clipped",
    "tanh16",
    "tanh64",
]
