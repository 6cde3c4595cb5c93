"""Shared test helpers: loading config files, and shrinking an experiment to test size."""

import importlib.util


def load_config(path, arg=None):
    spec = importlib.util.spec_from_file_location("config_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def tiny(config, **overrides):
    """The same experiment at test size: 64 bundled digits, batch 16, narrow networks. An override named
    after a field of config.model sets that field (``encoder="gaussian"`` sets config.model.encoder)."""
    config.dataset = "mnist_sample"
    config.model.network = "mlp"
    config.model.mlp_hidden = (32,)
    config.model.latent_dim = 4
    config.model.flow_hidden = (8,)
    config.model.vamp_components = 3
    config.num_train_examples = 64
    config.num_test_examples = 32
    config.batch_size = 16
    config.num_epochs = 1
    config.iwae_samples = 3
    config.log_every_steps = 2
    for key, value in overrides.items():
        (config.model if key in config.model else config)[key] = value
    return config


def run_on_cpu_devices(script, num_devices=4, timeout=600):
    """Runs `script` in a fresh Python with `num_devices` simulated CPU devices (XLA creates them only when
    told before jax starts) and returns the JSON its last printed line holds."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}", "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
