"""Disentanglement experiments on dSprites: train, then MIG and FactorVAE (and the rate-distortion terms).

    python -m experiments.disentanglement --config configs/disentanglement/echo.py --workdir runs/dis_echo
    python -m experiments.disentanglement --config configs/disentanglement/vae.py:quick --workdir runs/q \\
        --config.dataset=dsprites_correlated --config.betas=1,4 --config.model.tc_weight=10

Same flags and work-directory layout as experiments.rate_distortion; results.json gains a
"disentanglement" entry per model. --help lists every config field with its default and meaning.
"""

from echo_jax import cli, defaults
from experiments.rate_distortion import main

if __name__ == "__main__":
    cli.run(main, defaults.disentanglement_config)
