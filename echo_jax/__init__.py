"""echo-jax: Echo noise autoencoders in JAX/Flax.

Echo noise (Brekelmans et al., NeurIPS 2019) is z = f(x) + S(x) * eps, where eps is built from the
encodings of other data points, so that the rate I(X;Z) = -E log|det S(x)| is exact.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# The public names and the module each comes from. They are imported on first use, so that the command lines
# can load and check a config (and `import echo_jax` stays fast) before jax is imported.
_LAZY = {
    "echo_clip": "echo_jax.noise",
    "echo_rate": "echo_jax.noise",
    "echo_sample": "echo_jax.noise",
    "linear_clipped": "echo_jax.noise",
    "tanh16": "echo_jax.noise",
    "tanh64": "echo_jax.noise",
    "TrainedModel": "echo_jax.trained",
    "load_run": "echo_jax.trained",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    """Imports a public name's module on first use of the name."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'echo_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later uses find it without coming here
    return value


def __dir__() -> list[str]:
    """The module's names, the public ones not yet imported among them (for tab completion and `dir`)."""
    return sorted(set(__all__) | set(globals()))
