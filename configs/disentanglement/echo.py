"""Echo noise on dSprites (the original's echo_dlib): disentanglement_lib conv network, 10-d latent,
f = tanh(x/16), batch 64 (63 echo terms; c = 0.7591 solved for them - the original used 0.7622, the K=64
value: --config.model.echo_clip=0.7622 reproduces it), Adam 1e-4, 26 epochs (299,520 steps).

Full protocol:
    python -m experiments.disentanglement --config configs/disentanglement/echo.py --workdir runs/dis_echo
Quick, a CPU smoke test, not the protocol (the MLP network, Adam 1e-3, 1,500 steps on 50,000 images,
smaller metric samples; a few minutes on 2 cores):
    python -m experiments.disentanglement --config configs/disentanglement/echo.py:quick --workdir runs/dis_echo_q
Options: --config.dataset=dsprites_correlated, --config.beta=4 or --config.betas=1,2,4 (a sweep),
--config.model.tc_weight=10 (FactorVAE discriminator), --config.representation=mean,
--config.metrics=all (also DCI, SAP, modularity/explicitness and the unsupervised scores; default mig,factor_vae).
"""

from echo_jax.defaults import disentanglement_config, variant


def get_config(arg=None):
    config = disentanglement_config(quick=variant(arg))
    config.model.encoder = "echo"
    config.model.marginal = "none"
    return config
