"""The package's public names: listed by dir(), imported on first use, and jax not imported before."""

import os
import subprocess
import sys

import pytest

import echo_jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dir_lists_the_lazy_public_names():
    names = dir(echo_jax)
    for name in ("echo_sample", "echo_rate", "echo_clip", "tanh16", "load_run", "TrainedModel", "__version__"):
        assert name in names
    assert names == sorted(names)


def test_the_noise_names_resolve():
    from echo_jax import noise

    for name in ("echo_clip", "echo_rate", "echo_sample", "linear_clipped", "tanh16", "tanh64"):
        assert getattr(echo_jax, name) is getattr(noise, name)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        echo_jax.no_such_name  # noqa: B018


def test_importing_the_package_does_not_import_jax():
    # A fresh interpreter: this one has imported jax already (tests/conftest.py).
    code = "import sys, echo_jax; dir(echo_jax); echo_jax.__version__; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
