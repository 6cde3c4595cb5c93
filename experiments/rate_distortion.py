"""Rate-distortion experiments: train an autoencoder (or a sweep of betas) and write its results.

    python -m experiments.rate_distortion --config configs/rate_distortion/echo.py --workdir runs/echo
    python -m experiments.rate_distortion --config configs/rate_distortion/echo.py:quick --workdir runs/q \\
        --config.betas=0.3,1,3

Any config field can be overridden with --config.FIELD=VALUE; --help lists them all, with their defaults and
meaning (with --config FILE, that file's values). The work directory receives config.json,
metrics.jsonl, checkpoints/ and results.json (see echo_jax.workdir); a sweep also gets its plots and table (see
experiments/report.py). Rerunning on an unfinished work directory resumes it. A bad flag or config value
ends with one line, `error: ...`, and exit status 1 (ECHO_JAX_TRACEBACK=1 shows the traceback).
"""

from absl import flags, logging
from ml_collections import config_flags

from echo_jax import cli, defaults, validation

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Required. A config file, ':quick' for its CPU-sized variant: configs/rate_distortion/echo.py:quick, "
    "configs/disentanglement/vae.py, ...",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Required. Directory for the run's files; rerunning resumes it.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    config = _CONFIG.value
    validation.validate_config(config)  # before importing the model and the training loop: a bad config fails at once
    from echo_jax import disentanglement, report, train

    results = train.train_and_evaluate(config, _WORKDIR.value, evaluators=disentanglement.evaluators(config))
    print(report.write_report(_WORKDIR.value, results))


if __name__ == "__main__":
    cli.run(main, defaults.rate_distortion_config)
