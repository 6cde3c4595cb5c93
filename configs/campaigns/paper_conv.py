"""The paper's own protocol, for a machine with an accelerator: the conv network, 200 epochs, seeds 0-2.

    python -m experiments.campaign --campaign configs/campaigns/paper_conv.py
    python -m experiments.report --campaign configs/campaigns/paper_conv.py

Schedule (the full configs, the original's): conv network of Alemi et al. (2018), latent 32, batch 100,
Adam lr 3e-4 constant for 100 epochs then linearly to 0 at epoch 200 (the intended schedule; the
original's as-coded one is `lr_schedule=as_coded`), test terms every 10 epochs, a 100-sample IWAE bound
at the end. dSprites (group D): the full protocol, 26 epochs (299,520 steps of batch 64).
Cost: on this project's 2-core CPU a conv model takes about 6.7 hours (120 s an epoch, measured), so
group A alone (30 models) is about 8 days. On an accelerator, not measured yet: the runner packs each
variant's betas and seeds into one vmapped program (`--layout per_variant`, the default there).
"""

from echo_jax.paper import paper_campaign


def get_config():
    return paper_campaign(
        "paper_conv",
        quick=False,
        overrides={"num_epochs": 200, "eval_every_epochs": 10, "iwae_samples": 100, "log_every_steps": 500},
        dsprites_overrides={"log_every_steps": 1000},
        schedule="the paper's: conv network of Alemi et al. (2018), latent 32, batch 100, Adam lr 3e-4 constant "
        "for 100 epochs then linearly to 0 at epoch 200; a 100-sample IWAE bound at the end. dSprites: 26 "
        "epochs (299,520 steps) of batch 64.",
    )
