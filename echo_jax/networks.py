"""Encoder and decoder trunks: the paper's conv model, an MLP, and the dSprites conv model.

Every trunk maps images to features (encoders) or latents to Bernoulli logits (decoders); the
stochastic heads that turn features into a latent live elsewhere. Initialisation follows Keras, as in
the original code: glorot-uniform kernels and zero biases (`keras_init`, defined here once and used by
the heads in `echo_jax.heads` too).

The convolutions go through `Conv` and `ConvTranspose`, which hold exactly the parameters of
`flax.linen.Conv` / `flax.linen.ConvTranspose` and compute the same functions, in a form chosen per
platform inside the program (`lax.platform_dependent`): a program lowered for CPU gets the forms of
`echo_jax.ops.cpu_conv` (XLA:CPU's native forms were 2-5x slower there), one lowered for any other
platform (cuda, rocm, tpu) the native `lax` convolutions, whose libraries handle strided and
transposed convolutions directly. The choice follows the platform a program is lowered for, not the
process's default backend, so one jitted step is right everywhere, and a step exported from a CPU
machine for an accelerator (`jax.export`) holds the native forms. Both forms are traced; only the
chosen one is lowered and compiled.

The conv trunks take their layers as arguments (`conv`, `conv_transpose`): any class with
`flax.linen.Conv`'s constructor ``(features, kernel_size, strides, padding, kernel_init=, bias_init=,
name=)`` will do, e.g. `flax.linen.Conv` itself.

`cpu_compiler_options()` (from `echo_jax.ops.cpu_conv`) gives the `jax.jit` compiler options that keep
XLA:CPU's convolutions on its multi-threaded Eigen kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from echo_jax.ops import cpu_conv
from echo_jax.ops.cpu_conv import cpu_compiler_options  # noqa: F401 - the sweeps import it from here

Padding = str | Sequence[tuple[int, int]]
Initializer = Callable[..., jax.Array]
Pads = cpu_conv.Pads
# A conv layer class with flax.linen.Conv's constructor (Conv, ConvTranspose, nn.Conv, ...).
ConvLayer = Callable[..., nn.Module]

# Keras defaults, as in the original code.
keras_kernel_init: Initializer = nn.initializers.xavier_uniform()
keras_bias_init: Initializer = nn.initializers.zeros_init()
keras_init: dict[str, Initializer] = {"kernel_init": keras_kernel_init, "bias_init": keras_bias_init}


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_padding(padding: Padding) -> None:
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID' or two (low, high) pairs, got {padding!r}")
        return
    pads = tuple(padding)
    if len(pads) != 2 or not all(len(tuple(p)) == 2 for p in pads):
        raise ValueError(f"explicit padding must be two (low, high) pairs, one per spatial axis, got {padding!r}")


def conv_transpose_pads(kernel_size: Sequence[int], strides: Sequence[int], padding: Padding) -> Pads:
    """The padding of the dilated input that `lax.conv_transpose` applies (non-flipped kernel).

    For 'SAME' the output is input * stride; for 'VALID' it is (input - 1) * stride + max(kernel,
    stride); explicit (low, high) pairs are used as given, as `flax.linen.ConvTranspose` does.

    Args:
      kernel_size: kernel extent per spatial axis.
      strides: stride per spatial axis.
      padding: 'SAME', 'VALID', or one (low, high) pair per spatial axis.

    Returns:
      One (low, high) pair per spatial axis.
    """
    if not isinstance(padding, str):
        return tuple((int(lo), int(hi)) for lo, hi in padding)
    pads = []
    for k, s in zip(kernel_size, strides):
        if padding == "SAME":
            total = k + s - 2
            low = k - 1 if s > k - 1 else -(-total // 2)
        else:
            total = k + s - 2 + max(k - s, 0)
            low = k - 1
        pads.append((low, total - low))
    return tuple(pads)


def native_conv(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, strides: tuple[int, int], pads: Pads
) -> jax.Array:
    """The convolution as `flax.linen.Conv` computes it: ``lax.conv_general_dilated + bias``."""
    y = lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=cpu_conv.DIMENSION_NUMBERS)
    return y if bias is None else y + bias


def native_conv_transpose(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, strides: tuple[int, int], pads: Pads
) -> jax.Array:
    """The transposed convolution as `flax.linen.ConvTranspose` computes it: ``lax.conv_transpose + bias``."""
    y = lax.conv_transpose(x, kernel, strides, pads, dimension_numbers=cpu_conv.DIMENSION_NUMBERS)
    return y if bias is None else y + bias


def _per_platform(cpu_form: Callable[..., jax.Array], native_form: Callable[..., jax.Array], *args) -> jax.Array:
    """``cpu_form(*args)`` in a program lowered for CPU, ``native_form(*args)`` in one for any other platform."""
    return lax.platform_dependent(*args, cpu=cpu_form, default=native_form)


def _check_image_batch(x: jax.Array, module: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{module} expects images of shape (batch, height, width, channels), got shape {x.shape}")


class _ConvFields(nn.Module):
    """The fields `Conv` and `ConvTranspose` share with their flax.linen counterparts."""

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Padding = "SAME"
    use_bias: bool = True
    kernel_init: Initializer = keras_kernel_init
    bias_init: Initializer = keras_bias_init

    def _params(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | None, tuple[int, int], tuple[int, int]]:
        """Checks the input and fields; returns (x, kernel, bias, kernel_size, strides)."""
        _check_image_batch(x, type(self).__name__)
        kernel_size = _pair(self.kernel_size, "kernel_size")
        strides = _pair(self.strides, "strides")
        _check_padding(self.padding)
        kernel = self.param("kernel", self.kernel_init, kernel_size + (x.shape[-1], self.features))
        x = jnp.asarray(x, kernel.dtype)
        bias = self.param("bias", self.bias_init, (self.features,), kernel.dtype) if self.use_bias else None
        return x, kernel, bias, kernel_size, strides


class Conv(_ConvFields):
    """A 2-D convolution with `flax.linen.Conv`'s parameters and outputs, in each platform's best form.

    Attributes:
      features: output channels.
      kernel_size: kernel extent, an int or an (h, w) pair.
      strides: stride, an int or an (h, w) pair.
      padding: 'SAME', 'VALID', or one (low, high) pair per spatial axis.
      use_bias: whether to add a bias.
      kernel_init: kernel initializer (Keras glorot-uniform).
      bias_init: bias initializer (zeros).
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the convolution.

        Args:
          x: (batch, height, width, in_features).

        Returns:
          (batch, out_height, out_width, features).
        """
        x, kernel, bias, kernel_size, strides = self._params(x)
        if isinstance(self.padding, str):
            pads = tuple(lax.padtype_to_pads(x.shape[1:3], kernel_size, strides, self.padding))
        else:
            pads = tuple((int(low), int(high)) for low, high in self.padding)
        cpu_form = lambda x, kernel, bias: cpu_conv.conv(x, kernel, bias, strides, pads)
        native_form = lambda x, kernel, bias: native_conv(x, kernel, bias, strides, pads)
        return _per_platform(cpu_form, native_form, x, kernel, bias)


class ConvTranspose(_ConvFields):
    """A 2-D transposed convolution with `flax.linen.ConvTranspose`'s parameters and outputs.

    Same kernel layout (kh, kw, in, out), same names, same padding rules (`transpose_kernel=False`),
    so checkpoints are interchangeable. On CPU it runs in the polyphase form of `echo_jax.ops.cpu_conv`.

    Attributes:
      features: output channels.
      kernel_size: kernel extent, an int or an (h, w) pair.
      strides: stride (the upsampling factor), an int or an (h, w) pair.
      padding: 'SAME', 'VALID', or one (low, high) pair per spatial axis, as in
        `flax.linen.ConvTranspose`.
      use_bias: whether to add a bias.
      kernel_init: kernel initializer (Keras glorot-uniform).
      bias_init: bias initializer (zeros).
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the transposed convolution.

        Args:
          x: (batch, height, width, in_features).

        Returns:
          (batch, out_height, out_width, features); 'SAME' gives height * stride.
        """
        x, kernel, bias, kernel_size, strides = self._params(x)
        pads = conv_transpose_pads(kernel_size, strides, self.padding)
        cpu_form = lambda x, kernel, bias: cpu_conv.conv_transpose(x, kernel, bias, strides, pads)
        native_form = lambda x, kernel, bias: native_conv_transpose(x, kernel, bias, strides, pads)
        return _per_platform(cpu_form, native_form, x, kernel, bias)


class ConvEncoder(nn.Module):
    """The paper's MNIST-family conv trunk (spec 3.1, encoder layers 0-4), 28x28 images to 256 features.

    Conv 32 k5 -> Conv 32 k5 s2 -> Conv 64 k5 -> Conv 64 k5 s2 -> Conv 256 k7 VALID, all ReLU.

    Attributes:
      conv: the conv layer class (`Conv`, chosen per platform, unless given).
    """

    conv: ConvLayer = Conv

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Computes the features.

        Args:
          x: (batch, 28, 28, channels) images.

        Returns:
          (batch, 256) features.
        """
        _check_image_batch(x, "ConvEncoder")
        if x.shape[1:3] != (28, 28):
            raise ValueError(
                f"ConvEncoder takes 28x28 images (its last 7x7 VALID layer needs a 7x7 map), got {x.shape}; "
                "use the 'mlp' trunks for other sizes"
            )
        layers = [(32, 5, 1, "SAME"), (32, 5, 2, "SAME"), (64, 5, 1, "SAME"), (64, 5, 2, "SAME"), (256, 7, 1, "VALID")]
        for i, (features, kernel, stride, padding) in enumerate(layers):
            layer = self.conv(features, (kernel, kernel), (stride, stride), padding, name=f"conv{i}", **keras_init)
            x = nn.relu(layer(x))
        return x.reshape(x.shape[0], -1)


class ConvDecoder(nn.Module):
    """The paper's MNIST-family conv decoder (spec 3.1): latent to 28x28 Bernoulli logits.

    ConvT 64 k7 VALID -> ConvT 64 k5 -> ConvT 64 k5 s2 -> ConvT 32 k5 -> ConvT 32 k5 s2 ->
    ConvT 32 k4 (all ReLU) -> Conv `output_channels` k5, linear (the loss applies the sigmoid).

    Attributes:
      output_channels: channels of the output image.
      conv: the conv layer class of the output layer (`Conv` unless given).
      conv_transpose: the transposed conv layer class (`ConvTranspose` unless given).
    """

    output_channels: int = 1
    conv: ConvLayer = Conv
    conv_transpose: ConvLayer = ConvTranspose

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """Decodes latents.

        Args:
          z: (batch, latent_dim).

        Returns:
          (batch, 28, 28, output_channels) logits.
        """
        if z.ndim != 2:
            raise ValueError(f"ConvDecoder expects latents of shape (batch, latent_dim), got {z.shape}")
        x = z[:, None, None, :]
        layers = [
            (64, 7, 1, "VALID"),
            (64, 5, 1, "SAME"),
            (64, 5, 2, "SAME"),
            (32, 5, 1, "SAME"),
            (32, 5, 2, "SAME"),
            (32, 4, 1, "SAME"),
        ]
        for i, (features, kernel, stride, padding) in enumerate(layers):
            layer = self.conv_transpose(
                features, (kernel, kernel), (stride, stride), padding, name=f"deconv{i}", **keras_init
            )
            x = nn.relu(layer(x))
        return self.conv(self.output_channels, (5, 5), (1, 1), "SAME", name="conv_out", **keras_init)(x)


class MLPEncoder(nn.Module):
    """A fully connected trunk: flattened image through ReLU layers.

    Attributes:
      hidden_sizes: widths of the hidden layers; the last is the feature size.
    """

    hidden_sizes: Sequence[int] = (500, 500)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Computes the features.

        Args:
          x: (batch, ...) images of any shape.

        Returns:
          (batch, hidden_sizes[-1]) features.
        """
        if not self.hidden_sizes:
            raise ValueError("MLPEncoder needs at least one hidden size, e.g. hidden_sizes=(500, 500)")
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden_sizes):
            x = nn.relu(nn.Dense(width, name=f"dense{i}", **keras_init)(x))
        return x


class MLPDecoder(nn.Module):
    """A fully connected decoder: latent through ReLU layers to image logits.

    Attributes:
      hidden_sizes: widths of the hidden layers.
      output_shape: shape of one output image.
    """

    hidden_sizes: Sequence[int] = (500, 500)
    output_shape: Sequence[int] = (28, 28, 1)

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """Decodes latents.

        Args:
          z: (batch, latent_dim).

        Returns:
          (batch, *output_shape) logits.
        """
        if z.ndim != 2:
            raise ValueError(f"MLPDecoder expects latents of shape (batch, latent_dim), got {z.shape}")
        x = z
        for i, width in enumerate(self.hidden_sizes):
            x = nn.relu(nn.Dense(width, name=f"dense{i}", **keras_init)(x))
        x = nn.Dense(math.prod(self.output_shape), name="dense_out", **keras_init)(x)
        return x.reshape((x.shape[0],) + tuple(self.output_shape))


class DSpritesEncoder(nn.Module):
    """The dSprites conv trunk (spec 3.2, disentanglement_lib conv_encoder): 64x64 images to 256 features.

    Conv 32 k4 s2 -> Conv 32 k4 s2 -> Conv 64 k2 s2 -> Conv 64 k2 s2 -> flatten -> Dense 256, all ReLU.

    Attributes:
      conv: the conv layer class (`Conv`, chosen per platform, unless given).
    """

    conv: ConvLayer = Conv

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Computes the features.

        Args:
          x: (batch, 64, 64, channels) images.

        Returns:
          (batch, 256) features.
        """
        _check_image_batch(x, "DSpritesEncoder")
        if x.shape[1:3] != (64, 64):
            raise ValueError(f"DSpritesEncoder takes 64x64 images, got {x.shape}")
        for i, (features, kernel) in enumerate([(32, 4), (32, 4), (64, 2), (64, 2)]):
            x = nn.relu(self.conv(features, (kernel, kernel), (2, 2), "SAME", name=f"conv{i}", **keras_init)(x))
        x = x.reshape(x.shape[0], -1)
        return nn.relu(nn.Dense(256, name="dense", **keras_init)(x))


class DSpritesDecoder(nn.Module):
    """The dSprites decoder (spec 3.2, disentanglement_lib deconv_decoder): latent to 64x64 logits.

    Dense 256 -> Dense 1024 -> reshape 4x4x64 -> ConvT 64 k4 s2 -> ConvT 32 k4 s2 -> ConvT 32 k4 s2
    (all ReLU) -> ConvT `output_channels` k4 s2, linear.

    Attributes:
      output_channels: channels of the output image.
      conv_transpose: the transposed conv layer class (`ConvTranspose` unless given).
    """

    output_channels: int = 1
    conv_transpose: ConvLayer = ConvTranspose

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """Decodes latents.

        Args:
          z: (batch, latent_dim).

        Returns:
          (batch, 64, 64, output_channels) logits.
        """
        if z.ndim != 2:
            raise ValueError(f"DSpritesDecoder expects latents of shape (batch, latent_dim), got {z.shape}")
        x = nn.relu(nn.Dense(256, name="dense0", **keras_init)(z))
        x = nn.relu(nn.Dense(1024, name="dense1", **keras_init)(x))
        x = x.reshape(x.shape[0], 4, 4, 64)
        for i, features in enumerate([64, 32, 32]):
            x = nn.relu(self.conv_transpose(features, (4, 4), (2, 2), "SAME", name=f"deconv{i}", **keras_init)(x))
        return self.conv_transpose(self.output_channels, (4, 4), (2, 2), "SAME", name="deconv_out", **keras_init)(x)


_TRUNK_SIZES = {"conv": (28, 28), "dsprites": (64, 64)}


def make_trunks(
    name: str, image_shape: Sequence[int], *, conv: ConvLayer = Conv, conv_transpose: ConvLayer = ConvTranspose
) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder trunks of one architecture for images of one shape.

    Args:
      name: "conv" (the paper's MNIST-family model, 28x28), "mlp" (any shape) or "dsprites" (64x64).
      image_shape: (height, width, channels) of one image.
      conv: the conv layer class of the conv trunks (`Conv`, chosen per platform, unless given).
      conv_transpose: their transposed conv layer class (`ConvTranspose` unless given).

    Returns:
      (encoder, decoder): the encoder maps (batch, *image_shape) to (batch, features); the decoder maps
      (batch, latent_dim) to (batch, *image_shape) logits.
    """
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape):
        raise ValueError(f"image_shape must be (height, width, channels) of positive ints, got {image_shape!r}")
    if name == "mlp":
        return MLPEncoder(), MLPDecoder(output_shape=shape)
    if name not in _TRUNK_SIZES:
        raise ValueError(f"unknown trunk {name!r}: choose one of 'conv', 'mlp', 'dsprites'")
    if shape[:2] != _TRUNK_SIZES[name]:
        size = "x".join(map(str, _TRUNK_SIZES[name]))
        raise ValueError(f"the {name!r} trunks take {size} images, got image_shape {shape}; use 'mlp' for other sizes")
    if name == "conv":
        return ConvEncoder(conv), ConvDecoder(shape[2], conv, conv_transpose)
    return DSpritesEncoder(conv), DSpritesDecoder(shape[2], conv_transpose)
