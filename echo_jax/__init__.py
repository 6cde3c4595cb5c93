"""echo-jax: Echo noise autoencoders in JAX/Flax.

Echo noise (Brekelmans et al., NeurIPS 2019) is z = f(x) + S(x) * eps, where eps is built from the
encodings of other data points, so that the rate I(X;Z) = -E log|det S(x)| is exact.
"""

import importlib

__version__ = "0.2.0"

__all__ = [
    "echo_clip",
    "echo_rate",
    "echo_sample",
    "linear_clipped",
    "tanh16",
    "tanh64",
]


def __getattr__(name: str):
    # Imported on first use, so that the command lines can load and check a config before importing jax.
    if name in __all__:
        return getattr(importlib.import_module("echo_jax.noise"), name)
    raise AttributeError(f"module 'echo_jax' has no attribute {name!r}")
