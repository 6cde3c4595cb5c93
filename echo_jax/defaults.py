"""Default experiment configurations; the files under configs/ start from these and set their variant.

Every field is documented here, once. Overrides on the command line: ``--config.field=value``.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def rate_distortion_config(quick: bool = False) -> ml_collections.ConfigDict:
    """Defaults of the rate-distortion experiments (the original's MNIST-family protocol).

    Args:
      quick: a CPU-sized variant: the MLP network on the bundled `mnist_sample` dataset, a few epochs.
    """
    c = ml_collections.ConfigDict()
    c.experiment = "rate_distortion"

    # Data. binarize: "" keeps the dataset's default (static for binary_mnist, dynamic for the others).
    c.dataset = "binary_mnist"
    c.data_dir = ""  # "" -> $ECHO_JAX_DATA_DIR, else a per-user cache
    c.data_source = "files"  # files: the canonical files in data_dir | tfds: a tfds-prepared dataset
    c.tfds_data_dir = ""  # "" -> $TFDS_DATA_DIR, else ~/tensorflow_datasets; may be a gs:// folder
    c.binarize = ""
    c.num_train_examples = 0  # 0 -> the whole split; otherwise a fixed random subset of N examples
    c.num_test_examples = 0

    # Model: everything `echo_jax.model.Autoencoder` takes, as Autoencoder(image_shape, **config.model).
    # Unset (None) optional values mean "derived", as the comments say.
    c.model = ml_collections.ConfigDict()
    m = c.model
    m.network = "conv"  # conv (the paper's, Alemi et al. 2018) | mlp | dsprites
    m.mlp_hidden = (500, 500)
    m.latent_dim = 32
    m.encoder = "echo"  # echo | gaussian | iaf
    m.marginal = "none"  # none (echo) | std_normal | maf | vamp
    m.echo_activation = "tanh16"  # tanh16 | tanh64 | linear (clipped to +-echo_fx_bound)
    m.echo_fx_bound = 1.0
    m.echo_clip = config_dict.placeholder(float)  # None -> solved from the batch size: echo_clip(batch_size - 1)
    m.echo_order = "independent"  # independent (the paper's) | cyclic (fast, shared cyclic order)
    m.flow_steps = 4  # IAF posterior and MAF marginal
    m.flow_hidden = (640, 640, 640)
    m.flow_affine = False  # the original's flows are shift-only (volume preserving)
    m.vamp_components = 750
    m.vamp_as_coded = False  # True: the original's mean of component log-densities, not a log-mixture
    m.mmd_weight = 0.0  # InfoVAE penalty weight (999 in the original), not multiplied by beta; 0: no MMD
    m.mmd_bandwidth = config_dict.placeholder(float)  # None -> sqrt(D^2 / 2), the original info_vae's
    m.tc_weight = 0.0  # > 0 adds FactorVAE's total-correlation discriminator and penalty (weight tc_weight)

    # Objective: distortion + beta * rate (+ mmd_weight * mmd). betas: "0.1,0.3,1" trains one model per
    # beta in one program (a sweep); num_seeds > 1 adds seeds seed, seed+1, ... for every beta (a model's
    # seed sets its initialisation and noise). data_seed sets the data stream (batch order, dynamic
    # binarization) that all of the run's models share; unset, it is `seed`.
    c.beta = 1.0
    c.betas = ""
    c.num_seeds = 1
    c.seed = 0
    c.data_seed = config_dict.placeholder(int)

    # Optimisation: Adam with Keras's defaults; lr_schedule: linear_decay (intended: constant for the
    # first half of training, then linearly to 0) | as_coded (the original's, which drops to 1% at the
    # half and climbs back) | constant.
    c.batch_size = 100
    c.num_epochs = 200
    c.num_train_steps = 0  # 0 -> num_epochs full epochs; otherwise stop after this many steps
    c.learning_rate = 3e-4
    c.lr_schedule = "linear_decay"
    c.adam_eps = 1e-7
    c.discriminator_learning_rate = 1e-4  # the TC discriminator's own Adam (model.tc_weight > 0)

    # Evaluation, logging, checkpoints. iwae_samples > 0 adds an importance-sampled log-likelihood bound
    # (Gaussian and IAF encoders). sweep_strategy: auto | vmap | sequential (see echo_jax.sweep).
    c.eval_every_epochs = 10
    c.iwae_samples = 100  # at the final evaluation only
    c.log_every_steps = 100
    c.checkpoint_every_steps = 0  # 0 -> at the end of every epoch
    c.checkpoints_to_keep = 1  # the latest checkpoints kept on disk (2 keep an older one should the newest be damaged)
    c.sweep_strategy = "auto"
    c.models_per_program = 0  # 0 -> as many as fit in device memory; the rest run in later chunks
    c.data_loop = "auto"  # auto (device on accelerators, host on CPU) | host | device (see echo_jax.device_loop)
    c.steps_per_call = 100  # device loop: updates per dispatch (a dispatch also ends at each log/checkpoint/epoch)
    c.tensorboard = False  # also write the logged metrics as TensorBoard event files (needs echo-jax[tensorboard])

    if quick:
        c.dataset = "mnist_sample"
        c.model.network = "mlp"
        c.num_epochs = 5
        c.eval_every_epochs = 5
        c.iwae_samples = 10
        c.log_every_steps = 30
        c.learning_rate = 1e-3
    return c


def disentanglement_config(quick: bool = False) -> ml_collections.ConfigDict:
    """Defaults of the dSprites disentanglement experiments (the original's protocol, section 7 of the spec).

    Echo on the disentanglement_lib conv network, 10-d latent, batch 64, Adam 1e-4 (TF's eps 1e-8),
    26 epochs of dSprites (299,520 steps); metrics on the sampled code, as in the original.

    Args:
      quick: a CPU-sized smoke test (a few minutes on 2 cores): the MLP network, Adam 1e-3, 1,500 steps on a
        fixed random 50,000 of the images (the training-split evaluation reads all of them), smaller metric
        samples. Not the protocol: its scores say the pipeline runs, not how well a model disentangles.
    """
    c = rate_distortion_config()
    c.experiment = "disentanglement"
    c.dataset = "dsprites"  # or dsprites_correlated (train: kept combinations, test: removed ones)
    c.model.network = "dsprites"
    c.model.latent_dim = 10
    c.batch_size = 64
    c.num_epochs = 26
    c.learning_rate = 1e-4
    c.lr_schedule = "constant"
    c.adam_eps = 1e-8
    c.num_test_examples = 10_000  # rate/distortion on a fixed random subset (dSprites' test is its train)
    c.iwae_samples = 0
    c.eval_every_epochs = 1
    c.log_every_steps = 1000

    # Metrics (disentanglement_lib's protocol). representation: sample (the noisy z, as the original) |
    # mean (f(x) for Echo, the posterior mean for the Gaussian encoder). metrics: a comma-separated list of
    # mig, factor_vae, dci, sap, modularity, unsupervised (see echo_jax.disentanglement), or all.
    c.representation = "sample"
    c.metrics = ""  # "" -> mig,factor_vae, the original's two (unset keeps the run keys of runs before this field)
    c.mig_points = 10_000  # codes for MIG, also for dci, sap, modularity, unsupervised (and half as many test codes)
    c.factor_vae_train = 10_000
    c.factor_vae_eval = 5_000
    c.factor_vae_variance_points = 10_000

    if quick:
        c.model.network = "mlp"
        c.learning_rate = 1e-3
        c.num_train_steps = 1_500
        c.num_train_examples = 50_000
        c.num_test_examples = 2_000
        c.log_every_steps = 250
        c.mig_points = 5_000
        c.factor_vae_train = 500
        c.factor_vae_eval = 250
        c.factor_vae_variance_points = 5_000
    return c


# Fields that say how a run is executed, not what it computes: they are not part of a run's identity
# (`echo_jax.identity`: a campaign run's key, what a work directory holds), so a work directory resumes under
# other values of them. (tfds data equals the built-in readers' data, tested, so where the data is read from is
# not part of a run either; layout.json locks models_per_program and data_loop.)
EXECUTION_FIELDS = frozenset(
    {
        "data_dir",
        "data_source",
        "tfds_data_dir",
        "sweep_strategy",
        "models_per_program",
        "log_every_steps",
        "checkpoint_every_steps",
        "checkpoints_to_keep",
        "data_loop",
        "steps_per_call",
        "tensorboard",
    }
)


# The values of the fields that take one of a few, declared once: validation reads them, and the comments above
# say what each means. (The datasets and binarizations are echo_jax.data's.)
CHOICES = {
    "experiment": ("rate_distortion", "disentanglement"),
    "data_source": ("files", "tfds"),
    "model.network": ("conv", "mlp", "dsprites"),
    "model.encoder": ("echo", "gaussian", "iaf"),
    "model.marginal": ("none", "std_normal", "maf", "vamp"),
    "model.echo_activation": ("tanh16", "tanh64", "linear"),
    "model.echo_order": ("independent", "cyclic"),
    "lr_schedule": ("linear_decay", "as_coded", "constant"),
    "sweep_strategy": ("auto", "vmap", "sequential"),
    "data_loop": ("auto", "host", "device"),
    "representation": ("sample", "mean"),
}
# The disentanglement metrics config.metrics chooses from (echo_jax.disentanglement computes them), and those an
# unset config.metrics means: the original's two.
METRICS = ("mig", "factor_vae", "dci", "sap", "modularity", "unsupervised")
DEFAULT_METRICS = ("mig", "factor_vae")


def variant(arg: str | None) -> bool:
    """Parses a config file's argument (``file.py:quick``): True for quick, False for the full protocol."""
    if arg in (None, "", "full"):
        return False
    if arg == "quick":
        return True
    raise ValueError(f"unknown config variant {arg!r}; use 'file.py' (full protocol) or 'file.py:quick'")


RATE_DISTORTION_CONFIGS = (
    "echo",
    "echo_tanh64",
    "echo_linear",
    "vae",
    "info_vae",
    "vae_maf",
    "vae_vamp",
    "iaf_prior",
    "iaf_prior_mmd",
    "iaf_maf",
    "iaf_vamp",
)
