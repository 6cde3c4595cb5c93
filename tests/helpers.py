"""Shared test helpers: loading config files, and shrinking an experiment to test size."""

import importlib.util


def load_config(path, arg=None):
    spec = importlib.util.spec_from_file_location("config_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def tiny(config, **overrides):
    """The same experiment at test size: 64 bundled digits, batch 16, narrow networks."""
    config.dataset = "mnist_sample"
    config.network = "mlp"
    config.mlp_hidden = (32,)
    config.latent_dim = 4
    config.flow_hidden = (8,)
    config.vamp_components = 3
    config.num_train_examples = 64
    config.num_test_examples = 32
    config.batch_size = 16
    config.num_epochs = 1
    config.iwae_samples = 3
    config.log_every_steps = 2
    for key, value in overrides.items():
        config[key] = value
    return config
