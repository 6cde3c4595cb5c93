"""Test session set-up: a persistent XLA compilation cache, so identical programs compile once."""

import os
import tempfile

import jax

_CACHE = os.environ.get("ECHO_JAX_TEST_COMPILATION_CACHE") or os.path.join(tempfile.gettempdir(), "echo_jax_xla_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
