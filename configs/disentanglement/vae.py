"""Gaussian encoder (beta-VAE) on dSprites (the original's vae_dlib): disentanglement_lib conv network,
10-d latent, analytic KL to N(0, I), batch 64, Adam 1e-4, 26 epochs (299,520 steps).

Full protocol:
    python -m experiments.disentanglement --config configs/disentanglement/vae.py --workdir runs/dis_vae
Quick, a CPU smoke test, not the protocol (the MLP network, Adam 1e-3, 1,500 steps on 50,000 images,
smaller metric samples; a few minutes on 2 cores):
    python -m experiments.disentanglement --config configs/disentanglement/vae.py:quick --workdir runs/dis_vae_q
Options: --config.dataset=dsprites_correlated, --config.beta=4 or --config.betas=1,2,4 (a sweep),
--config.model.tc_weight=10 (FactorVAE discriminator), --config.representation=mean,
--config.metrics=all (also DCI, SAP, modularity/explicitness and the unsupervised scores; default mig,factor_vae).
"""

from echo_jax.defaults import disentanglement_config, variant


def get_config(arg=None):
    config = disentanglement_config(quick=variant(arg))
    config.model.encoder = "gaussian"
    config.model.marginal = "std_normal"
    return config
