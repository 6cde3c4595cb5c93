"""Disentanglement experiments on dSprites: train, then the disentanglement metrics (and the rate-distortion terms).

    python -m experiments.disentanglement --config configs/disentanglement/echo.py --workdir runs/dis_echo
    python -m experiments.disentanglement --config configs/disentanglement/vae.py:quick --workdir runs/q \\
        --config.dataset=dsprites_correlated --config.betas=1,4 --config.model.tc_weight=10 \\
        --config.metrics=mig,factor_vae,dci,sap

--config.metrics chooses the metrics: a comma-separated list of mig, factor_vae, dci, sap, modularity and
unsupervised, or all; unset, MIG and the FactorVAE score. Same flags and work-directory layout as
experiments.rate_distortion; results.json gains a "disentanglement" entry per model, and the printed table and
results.md show every score computed. --help lists every config field with its default and meaning.
"""

from absl import flags, logging
from ml_collections import config_flags

from echo_jax import cli, defaults, validation

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Required. A config file, ':quick' for its CPU-sized variant: configs/disentanglement/echo.py:quick, "
    "configs/disentanglement/vae.py, ...",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Required. Directory for the run's files; rerunning resumes it.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    config = _CONFIG.value
    validation.validate_config(config)  # before importing the model: a bad config fails at once
    from echo_jax import disentanglement, train

    evaluators = disentanglement.evaluators(config)  # checks config.metrics
    results = train.train_and_evaluate(config, _WORKDIR.value, evaluators=evaluators)
    print(disentanglement.write_report(_WORKDIR.value, results))


if __name__ == "__main__":
    cli.run(main, defaults.disentanglement_config)
