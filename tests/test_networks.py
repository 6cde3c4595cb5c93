"""Tests of the encoder/decoder trunks and of the fast Conv / ConvTranspose lowerings."""

from __future__ import annotations

import collections
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from echo_jax import networks
from echo_jax.ops import cpu_conv

# Differences are measured against the reference's largest magnitude (float32 sums of <= 800 terms).
RELATIVE_TOLERANCE = 1e-4
IN_FEATURES, OUT_FEATURES = 3, 4


def assert_close(actual, expected, what: str) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    error = float(np.max(np.abs(actual - expected)))
    assert error <= RELATIVE_TOLERANCE * scale, f"{what}: max error {error:.3g} vs scale {scale:.3g}"


def random_params(kernel_size: int, seed: int):
    """Random kernel (kh, kw, in, out) and non-zero biases, drawn with numpy (no jax RNG compiles)."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(kernel_size, kernel_size, IN_FEATURES, OUT_FEATURES)) / kernel_size
    bias = rng.normal(size=OUT_FEATURES)
    return {"params": {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}}


@jax.jit(static_argnums=0)
def outputs_and_vjp(module: nn.Module, params, x: jax.Array, cotangent: jax.Array):
    """Output, and gradients wrt params and input of <output, cotangent> (one compile per layer)."""
    y, vjp = jax.vjp(lambda p, x: module.apply(p, x), params, x)
    return y, vjp(cotangent)


def compare_with_flax(ours: nn.Module, reference: nn.Module, x: jax.Array, params, rng: np.random.Generator):
    """Asserts equal outputs and input, kernel and bias gradients for a random cotangent; returns ours."""
    y_shape = jax.eval_shape(reference.apply, params, x).shape
    cotangent = jnp.asarray(rng.normal(size=y_shape), jnp.float32)
    y, (param_grads, input_grad) = outputs_and_vjp(ours, params, x, cotangent)
    y_ref, (ref_param_grads, ref_input_grad) = outputs_and_vjp(reference, params, x, cotangent)
    assert_close(y, y_ref, "output")
    assert_close(input_grad, ref_input_grad, "input gradient")
    assert_close(param_grads["params"]["kernel"], ref_param_grads["params"]["kernel"], "kernel gradient")
    assert_close(param_grads["params"]["bias"], ref_param_grads["params"]["bias"], "bias gradient")
    return y


def check_against_flax(ours: nn.Module, reference: nn.Module, input_hw: tuple[int, int], seed: int = 0):
    rng = np.random.default_rng(seed + 10)
    x = jnp.asarray(rng.normal(size=(2, *input_hw, IN_FEATURES)), jnp.float32)
    params = random_params(reference.kernel_size[0], seed)
    return x, params, compare_with_flax(ours, reference, x, params, rng)


# Every transposed convolution of the decoders: (input size, kernel, stride, padding, output size).
DECODER_TRANSPOSED_CONVS = [
    pytest.param((1, 1), 7, 1, "VALID", (7, 7), id="conv-k7-valid-1to7"),
    pytest.param((7, 7), 5, 1, "SAME", (7, 7), id="conv-k5-s1-same-7"),
    pytest.param((7, 7), 5, 2, "SAME", (14, 14), id="conv-k5-s2-same-7to14"),
    pytest.param((14, 14), 5, 2, "SAME", (28, 28), id="conv-k5-s2-same-14to28"),
    pytest.param((28, 28), 4, 1, "SAME", (28, 28), id="conv-k4-s1-same-28"),
    pytest.param((4, 4), 4, 2, "SAME", (8, 8), id="dsprites-k4-s2-same-4to8"),
    pytest.param((32, 32), 4, 2, "SAME", (64, 64), id="dsprites-k4-s2-same-32to64"),
]


@pytest.mark.parametrize("input_hw, kernel, stride, padding, output_hw", DECODER_TRANSPOSED_CONVS)
def test_conv_transpose_matches_flax_and_lax(input_hw, kernel, stride, padding, output_hw):
    ours = networks.ConvTranspose(OUT_FEATURES, kernel, stride, padding)
    reference = nn.ConvTranspose(OUT_FEATURES, (kernel, kernel), (stride, stride), padding)
    x, params, y = check_against_flax(ours, reference, input_hw)
    assert y.shape == (2, *output_hw, OUT_FEATURES)
    p = params["params"]
    direct = lax.conv_transpose(x, p["kernel"], (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert_close(y, direct + p["bias"], "output vs lax.conv_transpose")


def numpy_conv_transpose(x: np.ndarray, kernel: np.ndarray, stride: int, pad_low: int, out_size: int) -> np.ndarray:
    """Transposed convolution by its definition: each input pixel scatters kernel * pixel into the output.

    lax.conv_transpose (transpose_kernel=False) correlates the kernel with the zero-dilated input padded
    by pad_low: y[o] = sum_t kernel[t] * dilated[o + t - pad_low], so input pixel i (at dilated
    position stride * i) reaches output o = stride * i + pad_low - t through tap t.
    """
    batch, height, width, _ = x.shape
    k = kernel.shape[0]
    y = np.zeros((batch, out_size, out_size, kernel.shape[-1]))
    for i in range(height):
        for j in range(width):
            for t in range(k):
                for u in range(k):
                    oi, oj = stride * i + pad_low - t, stride * j + pad_low - u
                    if 0 <= oi < out_size and 0 <= oj < out_size:
                        y[:, oi, oj] += x[:, i, j] @ kernel[t, u]
    return y


def test_stride2_conv_transpose_matches_scatter_definition():
    # k5 s2 'SAME' on 7x7: output 14x14; lax pads the dilated input by ceil((5 + 2 - 2) / 2) = 3 below.
    x = np.random.default_rng(0).normal(size=(2, 7, 7, IN_FEATURES))
    kernel = np.random.default_rng(1).normal(size=(5, 5, IN_FEATURES, OUT_FEATURES))
    params = {"params": {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.zeros(OUT_FEATURES)}}
    y = networks.ConvTranspose(OUT_FEATURES, 5, 2, "SAME").apply(params, jnp.asarray(x, jnp.float32))
    assert_close(y, numpy_conv_transpose(x, kernel, 2, 3, 14), "output vs scatter definition")


@pytest.mark.parametrize(
    "ours, reference, input_hw",
    [
        pytest.param(
            networks.Conv(OUT_FEATURES, 5, 2, "SAME"), nn.Conv(OUT_FEATURES, (5, 5), 2, "SAME"), (7, 7), id="conv-s2"
        ),
        pytest.param(
            networks.Conv(OUT_FEATURES, 3, 1, ((2, 0), (1, 1))),
            nn.Conv(OUT_FEATURES, (3, 3), 1, ((2, 0), (1, 1))),
            (6, 5),
            id="conv-explicit",
        ),
        pytest.param(
            networks.ConvTranspose(OUT_FEATURES, 5, 2, "SAME"),
            nn.ConvTranspose(OUT_FEATURES, (5, 5), (2, 2), "SAME"),
            (7, 7),
            id="conv-transpose-s2",
        ),
        pytest.param(
            networks.ConvTranspose(OUT_FEATURES, 7, 1, "VALID"),
            nn.ConvTranspose(OUT_FEATURES, (7, 7), (1, 1), "VALID"),
            (1, 1),
            id="conv-transpose-1x1",
        ),
    ],
)
def test_native_forms_match_flax(monkeypatch, ours, reference, input_hw):
    # The forms that programs lowered for other platforms (GPU, TPU) get, run here on CPU.
    monkeypatch.setattr(networks, "_per_platform", lambda cpu_form, native_form, *args: native_form(*args))
    check_against_flax(ours, reference, input_hw)


def conv_ops(lowered_text: str) -> collections.Counter:
    """The convolution ops of a lowered program (operands, attributes, types), without value names."""
    return collections.Counter(
        re.sub(r"%[\w#:]+", "%", line.split(" loc(")[0].strip())
        for line in lowered_text.splitlines()
        if "stablehlo.convolution" in line
    )


def zero_inserting_convs(lowered_text: str) -> int:
    """How many convolutions dilate their input (lhs_dilate > 1): transposed convolutions in lax's form."""
    dilations = re.findall(r"lhs_dilate = \[([\d, ]+)\]", lowered_text)
    return sum(any(int(d) > 1 for d in dilation.split(",")) for dilation in dilations)


@pytest.mark.parametrize(
    "ours, reference, input_hw, in_features",
    [
        pytest.param(
            networks.Conv(OUT_FEATURES, 5, 2, "SAME"),
            nn.Conv(OUT_FEATURES, (5, 5), 2, "SAME"),
            (7, 7),
            IN_FEATURES,
            id="conv-s2",
        ),
        pytest.param(
            networks.Conv(OUT_FEATURES, 3, 1, "SAME"),
            nn.Conv(OUT_FEATURES, (3, 3), 1, "SAME"),
            (6, 6),
            1,
            id="one-input-channel",
        ),
        pytest.param(
            networks.ConvTranspose(OUT_FEATURES, 5, 2, "SAME"),
            nn.ConvTranspose(OUT_FEATURES, (5, 5), (2, 2), "SAME"),
            (7, 7),
            IN_FEATURES,
            id="conv-transpose-s2",
        ),
    ],
)
def test_each_lowering_platform_gets_its_form(ours, reference, input_hw, in_features):
    # Lowered for cuda or tpu (from this CPU machine), the gradients of a layer vmapped over stacked
    # parameters, as sweeps compute them, hold exactly flax's (lax's) convolutions; lowered for CPU,
    # other ones (the CPU forms: no zero-inserting, lhs-dilated, convolutions).
    x = jax.ShapeDtypeStruct((2, *input_hw, in_features), jnp.float32)
    init = jax.vmap(lambda key: reference.init(key, jnp.zeros(x.shape, x.dtype)))
    params = jax.eval_shape(init, jax.ShapeDtypeStruct((2, 2), jnp.uint32))

    def lowered(module: nn.Module, platform: str) -> str:
        grads = jax.vmap(jax.grad(lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))), argnums=(0, 1)), (0, None))
        return jax.jit(grads).trace(params, x).lower(lowering_platforms=(platform,)).as_text()

    for platform in ("cuda", "tpu"):
        assert conv_ops(lowered(ours, platform)) == conv_ops(lowered(reference, platform)), platform
    cpu_text = lowered(ours, "cpu")
    assert conv_ops(cpu_text) != conv_ops(lowered(reference, "cpu"))
    assert zero_inserting_convs(cpu_text) == 0


def test_polyphase_form_handles_other_strides_and_explicit_padding():
    # Beyond the decoders' layers: stride 3 with a kernel shorter than the stride, explicit pads.
    check_against_flax(
        networks.ConvTranspose(OUT_FEATURES, 2, 3, "VALID"),
        nn.ConvTranspose(OUT_FEATURES, (2, 2), (3, 3), "VALID"),
        (3, 3),
        seed=1,
    )
    pads = ((1, 2), (0, 1))
    check_against_flax(
        networks.ConvTranspose(OUT_FEATURES, 3, 2, pads),
        nn.ConvTranspose(OUT_FEATURES, (3, 3), (2, 2), pads),
        (4, 5),
        seed=2,
    )
    # A 1x1 input whose 'VALID' output (3x3) is wider than the kernel (2x2): not the matrix-product form.
    check_against_flax(
        networks.ConvTranspose(OUT_FEATURES, 2, 3, "VALID"),
        nn.ConvTranspose(OUT_FEATURES, (2, 2), (3, 3), "VALID"),
        (1, 1),
        seed=3,
    )


# Every convolution of the encoders: (input size, kernel, stride, padding, output size).
ENCODER_CONVS = [
    pytest.param((28, 28), 5, 1, "SAME", (28, 28), id="conv-k5-s1-same-28"),
    pytest.param((28, 28), 5, 2, "SAME", (14, 14), id="conv-k5-s2-same-28to14"),
    pytest.param((14, 14), 5, 2, "SAME", (7, 7), id="conv-k5-s2-same-14to7"),
    pytest.param((7, 7), 7, 1, "VALID", (1, 1), id="conv-k7-valid-7to1"),
    pytest.param((7, 7), 7, 2, "VALID", (1, 1), id="conv-k7-s2-valid-7to1"),
    pytest.param((64, 64), 4, 2, "SAME", (32, 32), id="dsprites-k4-s2-same-64to32"),
    pytest.param((16, 16), 2, 2, "SAME", (8, 8), id="dsprites-k2-s2-same-16to8"),
]


@pytest.mark.parametrize("input_hw, kernel, stride, padding, output_hw", ENCODER_CONVS)
def test_conv_matches_flax(input_hw, kernel, stride, padding, output_hw):
    ours = networks.Conv(OUT_FEATURES, kernel, stride, padding)
    reference = nn.Conv(OUT_FEATURES, (kernel, kernel), (stride, stride), padding)
    _, _, y = check_against_flax(ours, reference, input_hw)
    assert y.shape == (2, *output_hw, OUT_FEATURES)


def random_conv(in_features: int, out_features: int, kernel_size: int, input_hw, batch: int, seed: int):
    """Input, kernel and non-zero bias of one convolution, drawn with numpy."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, *input_hw, in_features)), jnp.float32)
    kernel = rng.normal(size=(kernel_size, kernel_size, in_features, out_features)) / kernel_size
    params = {
        "params": {
            "kernel": jnp.asarray(kernel, jnp.float32),
            "bias": jnp.asarray(rng.normal(size=out_features), jnp.float32),
        }
    }
    return x, params


# Convolutions with one input or one output channel (the paper's first and last layers) have forms of
# their own; explicit paddings cover asymmetric and negative transposed paddings in their gradients.
SINGLE_CHANNEL_CONVS = [
    pytest.param(1, OUT_FEATURES, 5, "SAME", id="one-input-channel-k5-same"),
    pytest.param(IN_FEATURES, 1, 5, "SAME", id="one-output-channel-k5-same"),
    pytest.param(1, OUT_FEATURES, 4, ((3, 0), (1, 2)), id="one-input-channel-k4-explicit"),
    pytest.param(IN_FEATURES, 1, 3, "VALID", id="one-output-channel-k3-valid"),
    pytest.param(1, 1, 3, ((2, 2), (0, 1)), id="one-in-one-out-k3-explicit"),
]


@pytest.mark.parametrize("in_features, out_features, kernel, padding", SINGLE_CHANNEL_CONVS)
def test_single_channel_conv_matches_flax(in_features, out_features, kernel, padding):
    x, params = random_conv(in_features, out_features, kernel, (9, 8), batch=3, seed=4)
    pads = padding if isinstance(padding, str) else tuple(padding)
    ours, reference = networks.Conv(out_features, kernel, 1, pads), nn.Conv(out_features, (kernel, kernel), 1, pads)
    compare_with_flax(ours, reference, x, params, np.random.default_rng(5))


@pytest.mark.parametrize(
    "module, reference, input_hw",
    [
        pytest.param(
            networks.Conv(OUT_FEATURES, 5, 1, "SAME"), nn.Conv(OUT_FEATURES, (5, 5), 1, "SAME"), (6, 6), id="conv-s1"
        ),
        pytest.param(
            networks.Conv(OUT_FEATURES, 5, 2, "SAME"),
            nn.Conv(OUT_FEATURES, (5, 5), 2, "SAME"),
            (7, 7),
            id="conv-s2-odd",
        ),
        pytest.param(networks.Conv(1, 3, 1, "SAME"), nn.Conv(1, (3, 3), 1, "SAME"), (6, 6), id="one-output-channel"),
        pytest.param(
            networks.ConvTranspose(OUT_FEATURES, 5, 2, "SAME"),
            nn.ConvTranspose(OUT_FEATURES, (5, 5), (2, 2), "SAME"),
            (4, 4),
            id="conv-transpose-s2",
        ),
    ],
)
def test_kernel_gradient_summed_over_batch_chunks(monkeypatch, module, reference, input_hw):
    # Chunks of one or two examples (and an uneven last chunk) give the gradients of the whole batch.
    monkeypatch.setattr(cpu_conv, "_KERNEL_GRAD_CHUNK_BYTES", 2 * 4 * OUT_FEATURES * input_hw[0] * input_hw[1])
    x, params = random_conv(IN_FEATURES, module.features, 5 if module.features > 1 else 3, input_hw, 5, seed=6)
    assert len(cpu_conv._batch_chunks(x, jnp.zeros(x.shape[:3] + (OUT_FEATURES,)))) >= 3
    compare_with_flax(module, reference, x, params, np.random.default_rng(7))


def test_conv_without_bias_has_only_a_kernel():
    x, params = random_conv(IN_FEATURES, OUT_FEATURES, 5, (6, 6), batch=2, seed=8)
    params = {"params": {"kernel": params["params"]["kernel"]}}
    for ours, reference in [
        (networks.Conv(OUT_FEATURES, 5, 2, use_bias=False), nn.Conv(OUT_FEATURES, (5, 5), 2, use_bias=False)),
        (
            networks.ConvTranspose(OUT_FEATURES, 5, 2, use_bias=False),
            nn.ConvTranspose(OUT_FEATURES, (5, 5), (2, 2), use_bias=False),
        ),
    ]:
        assert jax.tree.structure(ours.init(jax.random.PRNGKey(0), x)) == jax.tree.structure(params)
        cotangent = jnp.ones(jax.eval_shape(reference.apply, params, x).shape)
        (y, (grads, _)), (y_ref, (ref_grads, _)) = (
            outputs_and_vjp(ours, params, x, cotangent),
            outputs_and_vjp(reference, params, x, cotangent),
        )
        assert_close(y, y_ref, "output")
        assert_close(grads["params"]["kernel"], ref_grads["params"]["kernel"], "kernel gradient")


@pytest.mark.parametrize(
    "module, kernel, in_features",
    [
        pytest.param(networks.Conv(OUT_FEATURES, 5, 2, "SAME"), 5, IN_FEATURES, id="strided"),
        pytest.param(networks.Conv(OUT_FEATURES, 3, 1, "SAME"), 3, 1, id="one-input-channel"),
        pytest.param(networks.Conv(1, 3, 1, "SAME"), 3, IN_FEATURES, id="one-output-channel"),
        pytest.param(networks.ConvTranspose(OUT_FEATURES, 5, 2, "SAME"), 5, IN_FEATURES, id="transposed"),
    ],
)
def test_custom_gradients_under_vmap_and_jit(module, kernel, in_features):
    # Sweeps vmap the train step over stacked parameters: every custom gradient must batch.
    x, first = random_conv(in_features, module.features, kernel, (6, 6), batch=2, seed=1)
    _, second = random_conv(in_features, module.features, kernel, (6, 6), batch=2, seed=2)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), first, second)

    def loss(params, x):
        return jnp.sum(jnp.sin(module.apply(params, x)))

    batched = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None)))(stacked, x)
    for m in range(2):
        single = jax.grad(loss, argnums=(0, 1))(jax.tree.map(lambda a, m=m: a[m], stacked), x)
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            assert_close(got[m], want, f"model {m} gradient")


@pytest.fixture(scope="module")
def initial_params():
    """Initial parameters of the conv trunks and the MLP decoder (one compile for all)."""

    @jax.jit
    def init_all(key):
        keys = jax.random.split(key, 3)
        return {
            "conv_encoder": networks.ConvEncoder().init(keys[0], jnp.zeros((1, 28, 28, 1))),
            "conv_decoder": networks.ConvDecoder().init(keys[1], jnp.zeros((1, 32))),
            "mlp_decoder": networks.MLPDecoder().init(keys[2], jnp.zeros((1, 32))),
        }

    # The "rbg" generator compiles in a fraction of threefry's time; the initializers are the same.
    return init_all(jax.random.key(0, impl="rbg"))


@pytest.mark.parametrize(
    "encoder, decoder, image_shape, latent_dim",
    [
        pytest.param(networks.ConvEncoder(), networks.ConvDecoder(), (28, 28, 1), 32, id="conv"),
        pytest.param(networks.MLPEncoder(), networks.MLPDecoder(), (28, 28, 1), 32, id="mlp"),
        pytest.param(networks.DSpritesEncoder(), networks.DSpritesDecoder(), (64, 64, 1), 10, id="dsprites"),
    ],
)
def test_trunk_output_shapes(encoder, decoder, image_shape, latent_dim):
    x = jnp.zeros((2, *image_shape))
    features, _ = jax.eval_shape(encoder.init_with_output, jax.random.PRNGKey(0), x)
    expected_features = 500 if isinstance(encoder, networks.MLPEncoder) else 256
    assert features.shape == (2, expected_features)
    logits, _ = jax.eval_shape(decoder.init_with_output, jax.random.PRNGKey(0), jnp.zeros((2, latent_dim)))
    assert logits.shape == (2, *image_shape)


def test_conv_decoder_matches_plain_flax_model(initial_params):
    # The whole conv decoder written with nn.ConvTranspose / nn.Conv computes the same logits.
    class PlainDecoder(nn.Module):
        @nn.compact
        def __call__(self, z):
            x = z[:, None, None, :]
            layers = [
                (64, 7, 1, "VALID"),
                (64, 5, 1, "SAME"),
                (64, 5, 2, "SAME"),
                (32, 5, 1, "SAME"),
                (32, 5, 2, "SAME"),
                (32, 4, 1, "SAME"),
            ]
            for i, (features, k, s, padding) in enumerate(layers):
                x = nn.relu(nn.ConvTranspose(features, (k, k), (s, s), padding, name=f"deconv{i}")(x))
            return nn.Conv(1, (5, 5), padding="SAME", name="conv_out")(x)

    z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32)), jnp.float32)
    params = initial_params["conv_decoder"]
    ours = jax.jit(networks.ConvDecoder().apply)(params, z)
    assert_close(ours, jax.jit(PlainDecoder().apply)(params, z), "decoder logits")


def test_trunks_take_their_conv_layers():
    # Built with flax's own layers, the conv trunks have the same parameters (names, shapes, initial
    # values) and compute the same functions: the layer class chooses only the form of the convolutions.
    flax_layers = dict(conv=nn.Conv, conv_transpose=nn.ConvTranspose)
    flax_encoder, flax_decoder = networks.make_trunks("dsprites", (64, 64, 1), **flax_layers)
    assert flax_encoder.conv is nn.Conv and flax_decoder.conv_transpose is nn.ConvTranspose
    rng = np.random.default_rng(0)
    pairs = [
        (networks.ConvDecoder(), networks.ConvDecoder(**flax_layers), rng.normal(size=(2, 32))),
        (networks.DSpritesEncoder(), flax_encoder, rng.uniform(size=(2, 64, 64, 1))),
    ]

    @jax.jit
    def init_and_apply(key, inputs):
        out = []
        for (ours, theirs), x in zip([pair[:2] for pair in pairs], inputs):
            params = ours.init(key, x)
            out.append((params, theirs.init(key, x), ours.apply(params, x), theirs.apply(params, x)))
        return out

    inputs = [jnp.asarray(x, jnp.float32) for _, _, x in pairs]
    for (ours, _, _), (params, flax_params, y, y_flax) in zip(
        pairs, init_and_apply(jax.random.key(0, impl="rbg"), inputs)
    ):
        assert jax.tree.structure(params) == jax.tree.structure(flax_params), type(ours).__name__
        jax.tree.map(np.testing.assert_array_equal, params, flax_params)
        assert_close(y, y_flax, f"{type(ours).__name__} output")


def test_make_trunks_builds_each_architecture_and_rejects_bad_requests():
    encoder, decoder = networks.make_trunks("conv", (28, 28, 1))
    assert isinstance(encoder, networks.ConvEncoder) and isinstance(decoder, networks.ConvDecoder)
    encoder, decoder = networks.make_trunks("mlp", (32, 32, 3))
    assert isinstance(encoder, networks.MLPEncoder) and tuple(decoder.output_shape) == (32, 32, 3)
    encoder, decoder = networks.make_trunks("dsprites", (64, 64, 1))
    assert isinstance(encoder, networks.DSpritesEncoder) and decoder.output_channels == 1
    with pytest.raises(ValueError, match="unknown trunk 'resnet'"):
        networks.make_trunks("resnet", (28, 28, 1))
    with pytest.raises(ValueError, match="take 28x28 images"):
        networks.make_trunks("conv", (32, 32, 3))
    with pytest.raises(ValueError, match="take 64x64 images"):
        networks.make_trunks("dsprites", (28, 28, 1))
    with pytest.raises(ValueError, match="image_shape must be"):
        networks.make_trunks("mlp", (784,))
    with pytest.raises(ValueError, match="ConvEncoder takes 28x28 images"):
        networks.ConvEncoder().init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match="padding must be"):
        networks.ConvTranspose(4, 3, 2, "CIRCULAR").init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)))


def test_init_is_glorot_uniform_with_zero_biases(initial_params):
    # Keras glorot-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), std a / sqrt(3); for a conv
    # kernel (kh, kw, in, out): fan_in = kh * kw * in, fan_out = kh * kw * out.
    params = initial_params
    checked = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        leaf = np.asarray(leaf)
        if path[-1].key == "bias":
            np.testing.assert_array_equal(leaf, 0.0)
            continue
        receptive_field = int(np.prod(leaf.shape[:-2]))
        fan_in, fan_out = receptive_field * leaf.shape[-2], receptive_field * leaf.shape[-1]
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.max(np.abs(leaf)) <= bound, jax.tree_util.keystr(path)
        # The sample std of n >= 800 uniform draws is within 8% (5 standard errors) of the truth.
        np.testing.assert_allclose(np.std(leaf), bound / np.sqrt(3.0), rtol=0.08, err_msg=jax.tree_util.keystr(path))
        assert abs(np.mean(leaf)) < 5 * bound / np.sqrt(3.0 * leaf.size), jax.tree_util.keystr(path)
        checked += 1
    assert checked == 5 + 7 + 3


def test_cpu_compiler_options_compile_and_keep_results(initial_params):
    options = networks.cpu_compiler_options()
    if jax.default_backend() == "cpu":
        assert options == {"xla_cpu_experimental_ynn_fusion_type": ""}
    encoder = networks.ConvEncoder()
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 28, 28, 1)), jnp.float32)
    params = initial_params["conv_encoder"]
    with_options = jax.jit(encoder.apply, compiler_options=options or None)(params, x)
    assert_close(with_options, jax.jit(encoder.apply)(params, x), "features with compiler options")
