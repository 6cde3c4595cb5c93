"""The sweep's steps exported (`jax.export`) from this CPU machine for GPUs and TPUs.

The train and eval steps are built as `echo_jax.train` builds them and vmapped over a model axis as
`echo_jax.sweep.Population` runs them on accelerators, then exported for "cuda" and "tpu" (nothing is
compiled or run: an export only traces and lowers). The conv networks' programs for those platforms
must hold the native convolutions: exactly the ones of the same step built with flax's own conv layers,
and none of the XLA:CPU forms of `echo_jax.ops.cpu_conv`, which the CPU export (the control) holds.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import re
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax import export

from echo_jax import defaults, networks, steps
from tests.helpers import run_on_cpu_devices, tiny

ACCELERATORS = ("cuda", "tpu")
BATCH, NUM_MODELS = 4, 2

HEADS = {
    "echo": dict(encoder="echo", marginal="none"),
    "gaussian": dict(encoder="gaussian", marginal="std_normal"),
    "iaf": dict(encoder="iaf", marginal="std_normal"),
}


def image_shape_of(network: str) -> tuple[int, int, int]:
    return (64, 64, 1) if network == "dsprites" else (28, 28, 1)


def sweep_steps(network: str, head: str, *, num_models: int = NUM_MODELS, mesh=None, **overrides):
    """The vmapped train and eval steps of a sweep, each with the abstract arguments it is exported with.

    Args:
      network: mlp, conv or dsprites (a disentanglement config; the others rate-distortion ones).
      head: a key of HEADS.
      num_models: length of the model axis.
      mesh: a one-axis ("models") mesh to shard the model axis over, as `Population` does; or None.
      **overrides: config fields.

    Returns:
      ((train_step, train_args), (eval_step, eval_args)): jitted functions and ShapeDtypeStructs.
    """
    base = defaults.disentanglement_config(True) if network == "dsprites" else defaults.rate_distortion_config(True)
    config = tiny(base, network=network, batch_size=BATCH, **HEADS[head], **overrides)
    shape = image_shape_of(network)
    model = steps.make_model(config, shape)
    optimizer = steps.make_optimizer(config, 4)
    sample = jnp.zeros((BATCH, *shape))
    init = jax.vmap(lambda key: steps.create_train_state(model, optimizer, key, sample, sample[0]))
    states = jax.eval_shape(init, jax.ShapeDtypeStruct((num_models, 2), jnp.uint32))
    # The final evaluation's step: with the IWAE bound where the head has a density.
    iwae_samples = config.iwae_samples if config.model.encoder != "echo" else 0
    train_step = jax.vmap(steps.make_train_step(model, optimizer), in_axes=(0, None, 0))
    eval_step = jax.vmap(steps.make_eval_step(model, iwae_samples=iwae_samples), in_axes=(0, None, None, 0))
    batch = jax.ShapeDtypeStruct((BATCH, *shape), jnp.float32)
    betas = jax.ShapeDtypeStruct((num_models,), jnp.float32)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    if mesh is None:
        jit_train, jit_eval = jax.jit(train_step), jax.jit(eval_step)
    else:
        models = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("models"))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        jit_train = jax.jit(train_step, in_shardings=(models, replicated, models), out_shardings=(models, models))
        jit_eval = jax.jit(eval_step, in_shardings=(models, replicated, replicated, models), out_shardings=models)
    return (jit_train, (states, batch, betas)), (jit_eval, (states.params, batch, key, betas))


def conv_ops(module_text: str) -> collections.Counter:
    """The convolution ops of a StableHLO module (operands, attributes, types), without value names."""
    return collections.Counter(
        re.sub(r"%[\w#:]+", "%", line.split(" loc(")[0].strip())
        for line in module_text.splitlines()
        if "stablehlo.convolution" in line
    )


def zero_inserting_convs(module_text: str) -> int:
    """How many convolutions dilate their input (lhs_dilate > 1): transposed convolutions in lax's form."""
    return sum(
        any(int(d) > 1 for d in dilation.split(","))
        for dilation in re.findall(r"lhs_dilate = \[([\d, ]+)\]", module_text)
    )


@contextlib.contextmanager
def flax_conv_layers():
    """Within it, models build their conv trunks with flax's own layers: the reference for the native forms.

    The model builds its trunks when it is traced, so steps must be traced (exported) inside too.
    """
    make_trunks = networks.make_trunks
    networks.make_trunks = functools.partial(make_trunks, conv=nn.Conv, conv_transpose=nn.ConvTranspose)
    try:
        yield
    finally:
        networks.make_trunks = make_trunks


def exported_modules(network: str, platforms, *, flax_layers: bool = False, **kwargs) -> dict[str, str]:
    """{"train-<platform>" / "eval-<platform>": StableHLO text} of a sweep's Echo steps (see `sweep_steps`)."""
    with flax_conv_layers() if flax_layers else contextlib.nullcontext():
        steps = sweep_steps(network, "echo", **kwargs)
        return {
            f"{name}-{platform}": export.export(step, platforms=[platform])(*args).mlir_module()
            for name, (step, args) in zip(("train", "eval"), steps)
            for platform in platforms
        }


STEPS = [
    pytest.param(network, head, {}, id=f"{network}-{head}") for network in ("mlp", "conv", "dsprites") for head in HEADS
]
# The disentanglement campaign's TC-penalised Echo adds a discriminator with its own optimizer.
STEPS.append(pytest.param("dsprites", "echo", {"tc_weight": 10.0}, id="dsprites-echo-tc"))


def shapes(avals) -> list[tuple]:
    return [(a.shape, a.dtype) for a in avals]


@pytest.mark.parametrize("network, head, overrides", STEPS)
def test_sweep_steps_export_for_accelerators(network, head, overrides):
    (train_step, train_args), (eval_step, eval_args) = sweep_steps(network, head, **overrides)
    for step, args in ((train_step, train_args), (eval_step, eval_args)):
        expected_out = jax.tree.leaves(jax.eval_shape(step, *args))
        for platform in ACCELERATORS:
            exported = export.export(step, platforms=[platform])(*args)
            assert exported.platforms == (platform,)
            assert shapes(exported.in_avals) == shapes(jax.tree.leaves(args))
            assert shapes(exported.out_avals) == shapes(expected_out)
            text = exported.mlir_module()
            if network == "mlp":
                assert "stablehlo.convolution" not in text
            else:
                assert zero_inserting_convs(text) > 0, "no transposed convolution in lax's form"


@pytest.mark.parametrize("network", ["conv", "dsprites"])
def test_accelerators_get_the_native_convolutions(network):
    # The steps built with flax.linen.Conv / ConvTranspose in the trunks are the reference for what
    # lax emits on each platform: `Conv` / `ConvTranspose` must emit exactly their convolutions on cuda
    # and tpu, and other ones (the CPU forms) on cpu, the control that shows the check can fail.
    platforms = (*ACCELERATORS, "cpu")
    ours = exported_modules(network, platforms)
    reference = exported_modules(network, platforms, flax_layers=True)
    for name in ours:
        if name.endswith("-cpu"):
            assert conv_ops(ours[name]) != conv_ops(reference[name]), name
            # The CPU forms compute transposed convolutions (and strided convolutions' input gradients)
            # without zero-insertion; lax's forms, on every platform, with it.
            assert zero_inserting_convs(ours[name]) == 0 < zero_inserting_convs(reference[name]), name
        else:
            assert conv_ops(ours[name]) == conv_ops(reference[name]), name


SHARDED_EXPORT = textwrap.dedent(
    """
    import json
    import jax, numpy as np
    from jax import export
    from tests.test_export import ACCELERATORS, conv_ops, exported_modules, sweep_steps
    assert jax.device_count() == 4, jax.devices()
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("models",))
    sharding = dict(num_models=8, mesh=mesh)
    reference = exported_modules("conv", ACCELERATORS, flax_layers=True, **sharding)
    out = {}
    for name, (step, args) in zip(("train", "eval"), sweep_steps("conv", "echo", **sharding)):
        for platform in ACCELERATORS:
            exported = export.export(step, platforms=[platform])(*args)
            specs = lambda shardings: sorted({tuple(s.spec) for s in shardings})
            text = exported.mlir_module()
            out[f"{name}-{platform}"] = {
                "platforms": list(exported.platforms),
                "nr_devices": exported.nr_devices,
                "in_specs": specs(exported.in_shardings_jax(mesh)),
                "out_specs": specs(exported.out_shardings_jax(mesh)),
                "mesh_in_module": 'sdy.mesh @mesh = <["models"=4]>' in text,
                "native_convs": conv_ops(text) == conv_ops(reference[f"{name}-{platform}"]) != {},
            }
    print(json.dumps(out))
    """
)


def test_sharded_sweep_steps_export_for_accelerators():
    # Sharding the model axis needs several devices, which XLA:CPU simulates only when told before jax
    # starts: a fresh process with 4 of them.
    out = run_on_cpu_devices(SHARDED_EXPORT)
    assert sorted(out) == sorted(f"{step}-{platform}" for step in ("train", "eval") for platform in ACCELERATORS)
    for name, result in out.items():
        platform = name.split("-")[1]
        assert result["platforms"] == [platform] and result["nr_devices"] == 4, name
        # States, betas and outputs split over the models; the batch and the eval key replicated.
        assert result["in_specs"] == [[], ["models"]], name
        assert result["out_specs"] == [["models"]], name
        assert result["mesh_in_module"] and result["native_convs"], name
