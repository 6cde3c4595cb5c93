"""The first run: Echo against a Gaussian VAE on the bundled MNIST sample, five betas each, one plot.

    python -m experiments.quickstart --workdir runs/quickstart

Needs no data folder and no network (the 10,000-digit `mnist_sample` ships with the package); a few
minutes on a 2-core CPU. Writes runs/quickstart/{echo,vae}/ (each a rate-distortion sweep) and, in
runs/quickstart/, results.md, rate_distortion.png and neg_elbo_vs_beta.png.
"""

import os

from absl import flags, logging

from echo_jax import cli, defaults, report, train
from echo_jax import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Directory for the runs and the report.")
_BETAS = flags.DEFINE_string("betas", "0.25,0.5,1,2,4", "Comma-separated betas swept for each method.")
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Epochs over the 9,000 training digits.")
# Narrower than the original's MLP (500-500): each model keeps a parameters file, and at this width the ten of
# them (4 MB each) leave the work directory under 50 MB.
HIDDEN = (400, 400)


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    rows = []
    with workdir_lib.lock(_WORKDIR.value):  # the whole quickstart: its two runs and the report beside them
        for name, encoder, marginal in [("echo", "echo", "none"), ("vae", "gaussian", "std_normal")]:
            config = defaults.rate_distortion_config(quick=True)
            config.model.encoder, config.model.marginal = encoder, marginal
            config.model.mlp_hidden = HIDDEN
            config.betas, config.num_epochs, config.eval_every_epochs = _BETAS.value, _EPOCHS.value, _EPOCHS.value
            rows += train.train_and_evaluate(config, os.path.join(_WORKDIR.value, name))["results"]
        note = budget_note(_EPOCHS.value)
        print(report.write_report(_WORKDIR.value, rows, note=note))
    print(note)
    print(f"plots and table written to {_WORKDIR.value}")


def budget_note(epochs: int) -> str:
    """What this run's numbers can and cannot say, and where the long runs are."""
    return (
        f"Budget: {epochs} epoch{'s' if epochs != 1 else ''} of the 9,000 bundled training digits "
        f"(MLP 784-{'-'.join(map(str, HIDDEN))}, latent 32, batch 100, Adam lr 1e-3), one seed per beta, test "
        "terms on 1,000 digits: a smoke test of the pipeline, not the paper's result. Echo starts slower than the "
        "VAE, so at short "
        "budgets its curve lies above the VAE's. For 100-epoch runs on binarized MNIST with three seeds, "
        "error bars and a verdict per claim of the paper, see docs/reproduction.md."
    )


if __name__ == "__main__":
    cli.run(main)
