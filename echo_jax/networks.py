"""Encoder and decoder trunks: the paper's conv model, an MLP, and the dSprites conv model.

Every trunk maps images to features (encoders) or latents to Bernoulli logits (decoders); the
stochastic heads that turn features into a latent live elsewhere. Initialisation follows Keras, as in
the original code: glorot-uniform kernels and zero biases.

The convolutions go through `Conv` and `ConvTranspose`, which hold exactly the parameters of
`flax.linen.Conv` / `flax.linen.ConvTranspose` and compute the same functions, but are lowered in
forms that XLA:CPU runs well:

* A stride-s transposed convolution is computed in its polyphase (sub-pixel) form: the s*s output
  phases of a stride-s transposed convolution each read the input through a slice of the kernel, so
  one stride-1 convolution with s*s times the output channels, followed by a depth-to-space reshape,
  computes all of them. XLA:CPU lowers the zero-inserting (lhs-dilated) convolution that
  `lax.conv_transpose` emits, and its gradient, to slow generic loops; the polyphase form costs what a
  stride-1 convolution costs, forward and backward.
* The input gradient of a convolution is such a transposed convolution, so convolutions get a
  custom VJP that computes it in the polyphase form.
* The kernel gradient contracts the batch, so XLA:CPU transposes both operands batch-minor first;
  it is computed over chunks of the batch small enough for those transposes to run in cache, and
  the bias gradient is summed from the same chunks.
* A convolution with one input channel (the encoder's first layer) is a matrix product with its
  patches; one with one output channel (the decoder's last layer) applies every tap everywhere in
  one matrix product and sums the shifted responses. Eigen's convolution runs both poorly (a
  contraction over one channel, or a product with a single column).
* A convolution whose window covers its whole input (the encoder's 7x7 VALID layer on a 7x7 map) and
  a transposed convolution of a 1x1 input (the decoder's first layer) are matrix products.

On other backends (GPU, TPU) the native `lax` convolutions are used: their libraries handle strided
and transposed convolutions directly.

XLA:CPU (jaxlib 0.10) also hands 2-D convolutions to its YNNPACK library, which runs them on one
thread here: 2-3x slower than its multi-threaded Eigen kernels on these layers, forward and
backward. `cpu_compiler_options()` gives the `jax.jit` compiler options that keep convolutions on
Eigen.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Padding = str | Sequence[tuple[int, int]]
Initializer = Callable[..., jax.Array]
Pads = tuple[tuple[int, int], ...]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Keras defaults, as in the original code.
keras_kernel_init: Initializer = nn.initializers.xavier_uniform()
keras_bias_init: Initializer = nn.initializers.zeros_init()

# A jax.jit compiler option of XLA:CPU: the list of op kinds it may hand to YNNPACK. Empty keeps
# convolutions (and everything else) on XLA's own Eigen-based kernels.
_YNN_OPTION = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def cpu_compiler_options() -> dict[str, str]:
    """`jax.jit` compiler options that make the conv trunks' train step fast on XLA:CPU.

    Use as ``jax.jit(train_step, compiler_options=cpu_compiler_options())``. On XLA:CPU they keep
    convolutions on XLA's Eigen kernels instead of YNNPACK (2-3x faster here, forward and backward;
    matrix products are unaffected). On other backends, or with an XLA that no longer knows the
    option, the result is empty, so the call is always safe.

    Returns:
      A dict of compiler options (possibly empty).
    """
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda: jnp.zeros(()), compiler_options=_YNN_OPTION).lower().compile()
    except Exception:  # noqa: BLE001 - an XLA that rejects the option: fall back to the defaults.
        return {}
    return dict(_YNN_OPTION)


def _fast_cpu_forms() -> bool:
    """Whether to use the forms tuned for XLA:CPU (else the native lax convolutions)."""
    return jax.default_backend() == "cpu"


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


def _phase_gather(kernel_size: int, stride: int, pad_low: int) -> tuple[np.ndarray, int, int]:
    """How the stride phases of one spatial axis read the input and the kernel.

    Output position o = stride * q + r (phase r) of a transposed convolution reads input positions
    q + d_r + j through kernel taps t_r + stride * j. With lo = min d_r, phase r is a stride-1
    correlation over the window q + lo + u, u in [0, window), with taps index[u, r] (or none, marked
    by index == kernel_size).

    Returns:
      (index, lo, hi): index of shape (window, stride); lo, hi: the window's first and last offset.
    """
    phases = []
    for r in range(stride):
        first_tap = (pad_low - r) % stride
        taps = list(range(first_tap, kernel_size, stride))
        if taps:
            phases.append((r, (r + first_tap - pad_low) // stride, taps))
    lo = min(offset for _, offset, _ in phases)
    hi = max(offset + len(taps) - 1 for _, offset, taps in phases)
    index = np.full((hi - lo + 1, stride), kernel_size, dtype=np.int32)
    for r, offset, taps in phases:
        for j, tap in enumerate(taps):
            index[offset - lo + j, r] = tap
    return index, lo, hi


def polyphase_conv_transpose(
    x: jax.Array, kernel: jax.Array, strides: Sequence[int], pads: Pads, bias: jax.Array | None = None
) -> jax.Array:
    """`lax.conv_transpose(x, kernel, strides, pads) + bias` (NHWC, HWIO) as one stride-1 convolution.

    The kernel is regrouped into a (window, window, in, s1*s2*out) kernel, one output block per
    phase, and the phases are interleaved by a depth-to-space reshape.

    Args:
      x: (batch, height, width, in_features).
      kernel: (kh, kw, in_features, out_features), not flipped (`transpose_kernel=False`).
      strides: stride per spatial axis.
      pads: padding of the dilated input, one (low, high) pair per spatial axis.
      bias: optional (out_features,) bias.

    Returns:
      (batch, out_height, out_width, out_features), equal to what `lax.conv_transpose` returns.
    """
    batch, in_h, in_w, in_features = x.shape
    out_features = kernel.shape[-1]
    in_sizes, out_sizes, conv_pads, indices = (in_h, in_w), [], [], []
    for axis in range(2):
        k, s, (low, high), n = kernel.shape[axis], strides[axis], pads[axis], in_sizes[axis]
        out_size = (n - 1) * s + 1 + low + high - k + 1
        per_phase = -(-out_size // s)
        index, lo, hi = _phase_gather(k, s, low)
        out_sizes.append(out_size)
        conv_pads.append((-lo, per_phase - 1 + hi - (n - 1)))
        indices.append(index)
    (s1, s2), (k1, k2) = strides, (indices[0].shape[0], indices[1].shape[0])
    # A zero tap at index kernel_size stands for "this phase does not read this window position".
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    grouped = padded[indices[0].reshape(-1)][:, indices[1].reshape(-1)]
    grouped = grouped.reshape(k1, s1, k2, s2, in_features, out_features)
    grouped = grouped.transpose(0, 2, 4, 1, 3, 5).reshape(k1, k2, in_features, s1 * s2 * out_features)
    grouped_bias = None if bias is None else jnp.tile(bias, s1 * s2)  # one copy per phase block
    y = _conv(x, grouped, grouped_bias, (1, 1), conv_pads)
    q1, q2 = y.shape[1:3]
    y = y.reshape(batch, q1, q2, s1, s2, out_features).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(batch, q1 * s1, q2 * s2, out_features)
    return y[:, : out_sizes[0], : out_sizes[1]]


# Kernel gradients are computed over chunks of the batch of about this many bytes (see
# `_kernel_and_bias_grads`); 2 MB measured fastest in the conv train step (1 MB and 4 MB: 3-5% slower).
_KERNEL_GRAD_CHUNK_BYTES = 2 << 20


def _batch_chunks(*arrays: jax.Array) -> list[tuple[int, int]]:
    """(start, stop) of consecutive batch chunks in which the largest array has about
    _KERNEL_GRAD_CHUNK_BYTES."""
    batch = arrays[0].shape[0]
    example_bytes = max(max(1, math.prod(a.shape[1:]) * a.dtype.itemsize) for a in arrays)
    size = max(1, min(batch, _KERNEL_GRAD_CHUNK_BYTES // example_bytes))
    return [(start, min(start + size, batch)) for start in range(0, batch, size)]


def _add_bias(y: jax.Array, bias: jax.Array | None) -> jax.Array:
    return y if bias is None else y + bias


def _input_grad_pads(kernel_size, strides, pads: Pads, in_sizes, out_sizes) -> Pads:
    """Dilated-input padding of the transposed convolution that is d conv(x) / d x."""
    return tuple(
        (k - 1 - low, n - 1 - (q - 1) * s + low)
        for k, s, (low, _), n, q in zip(kernel_size, strides, pads, in_sizes, out_sizes)
    )


def _kernel_and_bias_grads(x, cotangent, kernel_size, strides, pads: Pads, bias):
    """Gradients of <conv(x, kernel, strides, pads) + bias, cotangent> for the kernel and the bias.

    The kernel gradient is a convolution of the input with the cotangent that contracts the batch,
    so XLA:CPU first transposes both batch-minor; transposes of arrays larger than the cache are
    several times slower than those of arrays that fit, so the batch is cut into chunks and their
    gradients summed. The bias gradient is summed from the same transposed chunks while they are in
    cache (a sum over the whole cotangent runs as a slow windowed reduction on XLA:CPU).
    """
    # The padding that makes the correlation's output exactly the kernel's extent.
    grad_pads = tuple(
        (low, k + s * (q - 1) - n - low)
        for k, s, (low, _), n, q in zip(kernel_size, strides, pads, x.shape[1:3], cotangent.shape[1:3])
    )
    kernel_grad = bias_grad = 0.0
    for start, stop in _batch_chunks(x, cotangent):
        lhs = x[start:stop].transpose(3, 1, 2, 0)  # (in, H, W, batch): batch as the contracted features
        rhs = cotangent[start:stop].transpose(1, 2, 0, 3)  # (out H, out W, batch, out)
        kernel_grad += lax.conv_general_dilated(
            lhs, rhs, (1, 1), grad_pads, rhs_dilation=tuple(strides), dimension_numbers=_DIMENSION_NUMBERS
        )
        if bias is not None:
            rows = rhs.reshape(-1, rhs.shape[-1])
            bias_grad += jnp.ones(rows.shape[0], rows.dtype) @ rows
    return kernel_grad.transpose(1, 2, 0, 3), None if bias is None else bias_grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, strides: tuple[int, int], pads: Pads) -> jax.Array:
    """conv(x, kernel) + bias, with gradients computed in the forms above (polyphase, batch chunks)."""
    return _add_bias(lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS), bias)


def _conv_fwd(x, kernel, bias, strides, pads):
    return _conv(x, kernel, bias, strides, pads), (x, kernel, bias)


def _conv_bwd(strides, pads, residuals, cotangent):
    x, kernel, bias = residuals
    # d conv / d x is the transposed convolution of the cotangent with the spatially flipped kernel,
    # in and out features swapped; its dilated-input padding restores the input's extent.
    flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    input_pads = _input_grad_pads(kernel.shape[:2], strides, pads, x.shape[1:3], cotangent.shape[1:3])
    input_grad = polyphase_conv_transpose(cotangent, flipped, strides, input_pads)
    return (input_grad, *_kernel_and_bias_grads(x, cotangent, kernel.shape[:2], strides, pads, bias))


_conv.defvjp(_conv_fwd, _conv_bwd)


def _pad_spatial(x: jax.Array, pads: Pads) -> jax.Array:
    """Pads (or, for negative pads, crops) the two spatial axes of an NHWC array."""
    return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), *((low, high, 0) for low, high in pads), (0, 0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_one_input_channel(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, pads: Pads) -> jax.Array:
    """A stride-1 convolution of a single-channel input, as a matrix product with its patches.

    Eigen's convolution does poorly with one input channel, and the patches (one value per tap) are
    small. They are built tap-major, so that each tap's window is one contiguous block.
    """
    kh, kw = kernel.shape[:2]
    padded = _pad_spatial(x, pads)[..., 0]
    oh, ow = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
    patches = jnp.stack([padded[:, i : i + oh, j : j + ow] for i, j in np.ndindex(kh, kw)])
    return _add_bias(jnp.einsum("tnhw,to->nhwo", patches, kernel.reshape(-1, kernel.shape[-1])), bias)


def _conv_one_input_channel_fwd(x, kernel, bias, pads):
    return _conv_one_input_channel(x, kernel, bias, pads), (x, kernel, bias)


def _conv_one_input_channel_bwd(pads, residuals, cotangent):
    x, kernel, bias = residuals
    flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    input_pads = _input_grad_pads(kernel.shape[:2], (1, 1), pads, x.shape[1:3], cotangent.shape[1:3])
    input_grad = _conv_one_output_channel(cotangent, flipped, None, input_pads)
    return (input_grad, *_kernel_and_bias_grads(x, cotangent, kernel.shape[:2], (1, 1), pads, bias))


_conv_one_input_channel.defvjp(_conv_one_input_channel_fwd, _conv_one_input_channel_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_one_output_channel(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, pads: Pads) -> jax.Array:
    """A stride-1 convolution to a single output channel: every tap applied everywhere, then summed.

    One matrix product gives each tap's response at every position; the output sums those
    responses along the kernel's diagonals (shifted slices), instead of Eigen's one-output-channel
    convolution, which runs at matrix-vector speed.
    """
    kh, kw, in_features, _ = kernel.shape
    responses = x @ kernel.reshape(kh * kw, in_features).T
    # Tap (i, j)'s window of the padded responses, as a pad (or crop) of that tap's responses: XLA
    # fuses these pads into the sum instead of writing out the padded responses.
    (low_h, high_h), (low_w, high_w) = pads
    windows = [
        _pad_spatial(responses[..., i * kw + j, None],
                     ((low_h - i, high_h + 1 + i - kh), (low_w - j, high_w + 1 + j - kw)))
        for i, j in np.ndindex(kh, kw)
    ]
    return _add_bias(sum(windows), bias)


def _conv_one_output_channel_fwd(x, kernel, bias, pads):
    return _conv_one_output_channel(x, kernel, bias, pads), (x, kernel, bias)


def _conv_one_output_channel_bwd(pads, residuals, cotangent):
    x, kernel, bias = residuals
    kh, kw = kernel.shape[:2]
    flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    input_pads = _input_grad_pads((kh, kw), (1, 1), pads, x.shape[1:3], cotangent.shape[1:3])
    input_grad = _conv_one_input_channel(cotangent, flipped, None, input_pads)
    # Kernel gradient: the cotangent (one channel, so cheap to make batch-minor) correlated with the
    # input as the filter (batch moved next to the channels: copies of whole channel rows), in batch
    # chunks as in `_kernel_and_bias_grads`. It comes out spatially flipped.
    (low_h, _), (low_w, _) = pads
    (n_h, n_w), (q_h, q_w) = x.shape[1:3], cotangent.shape[1:3]
    grad_pads = ((kh - 1 - low_h, n_h - q_h + low_h), (kw - 1 - low_w, n_w - q_w + low_w))
    flipped_grad = 0.0
    for start, stop in _batch_chunks(x):
        flipped_grad += lax.conv_general_dilated(
            cotangent[start:stop].transpose(3, 1, 2, 0), x[start:stop].transpose(1, 2, 0, 3), (1, 1), grad_pads,
            dimension_numbers=_DIMENSION_NUMBERS,
        )
    kernel_grad = jnp.flip(flipped_grad[0], (0, 1))[..., None]
    return input_grad, kernel_grad, None if bias is None else jnp.sum(cotangent, axis=(0, 1, 2))


_conv_one_output_channel.defvjp(_conv_one_output_channel_fwd, _conv_one_output_channel_bwd)


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


class Conv(_ConvFields):
    """A 2-D convolution with `flax.linen.Conv`'s parameters and outputs, fast on XLA:CPU.

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
        _check_image_batch(x, "Conv")
        kernel_size = _pair(self.kernel_size, "kernel_size")
        strides = _pair(self.strides, "strides")
        _check_padding(self.padding)
        kernel = self.param("kernel", self.kernel_init, kernel_size + (x.shape[-1], self.features))
        x = jnp.asarray(x, kernel.dtype)
        if isinstance(self.padding, str):
            pads = tuple(lax.padtype_to_pads(x.shape[1:3], kernel_size, strides, self.padding))
        else:
            pads = tuple((int(low), int(high)) for low, high in self.padding)
        bias = self.param("bias", self.bias_init, (self.features,), kernel.dtype) if self.use_bias else None
        whole_window = x.shape[1:3] == kernel_size and all(p == (0, 0) for p in pads)
        if not _fast_cpu_forms():
            y = lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS)
            y = _add_bias(y, bias)
        elif whole_window:
            # One output pixel that sees the whole input: a matrix product.
            y = _add_bias((x.reshape(x.shape[0], -1) @ kernel.reshape(-1, self.features))[:, None, None, :], bias)
        elif strides == (1, 1) and x.shape[-1] == 1:
            y = _conv_one_input_channel(x, kernel, bias, pads)
        elif strides == (1, 1) and self.features == 1:
            y = _conv_one_output_channel(x, kernel, bias, pads)
        else:
            y = _conv(x, kernel, bias, strides, pads)
        return y


class ConvTranspose(_ConvFields):
    """A 2-D transposed convolution with `flax.linen.ConvTranspose`'s parameters and outputs.

    Same kernel layout (kh, kw, in, out), same names, same padding rules (`transpose_kernel=False`),
    so checkpoints are interchangeable. On XLA:CPU it runs in the polyphase form (see the module
    docstring), and a 1x1 input with 'VALID' padding is a matrix product with the flipped kernel.

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
        _check_image_batch(x, "ConvTranspose")
        kernel_size = _pair(self.kernel_size, "kernel_size")
        strides = _pair(self.strides, "strides")
        _check_padding(self.padding)
        kernel = self.param("kernel", self.kernel_init, kernel_size + (x.shape[-1], self.features))
        x = jnp.asarray(x, kernel.dtype)
        bias = self.param("bias", self.bias_init, (self.features,), kernel.dtype) if self.use_bias else None
        pads = conv_transpose_pads(kernel_size, strides, self.padding)
        if not _fast_cpu_forms():
            y = _add_bias(lax.conv_transpose(x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS), bias)
        elif x.shape[1:3] == (1, 1) and self.padding == "VALID":
            # Output pixel (i, j) of a single input pixel is that pixel times kernel tap (kh-1-i, kw-1-j).
            y = _add_bias(jnp.einsum("bi,hwio->bhwo", x[:, 0, 0, :], jnp.flip(kernel, (0, 1))), bias)
        else:
            y = polyphase_conv_transpose(x, kernel, strides, pads, bias)
        return y


class ConvEncoder(nn.Module):
    """The paper's MNIST-family conv trunk (spec 3.1, encoder layers 0-4), 28x28 images to 256 features.

    Conv 32 k5 -> Conv 32 k5 s2 -> Conv 64 k5 -> Conv 64 k5 s2 -> Conv 256 k7 VALID, all ReLU.
    """

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
        layers = [(32, 1), (32, 2), (64, 1), (64, 2)]
        for i, (features, stride) in enumerate(layers):
            x = nn.relu(Conv(features, 5, stride, "SAME", name=f"conv{i}")(x))
        x = nn.relu(Conv(256, 7, 1, "VALID", name="conv4")(x))
        return x.reshape(x.shape[0], -1)


class ConvDecoder(nn.Module):
    """The paper's MNIST-family conv decoder (spec 3.1): latent to 28x28 Bernoulli logits.

    ConvT 64 k7 VALID -> ConvT 64 k5 -> ConvT 64 k5 s2 -> ConvT 32 k5 -> ConvT 32 k5 s2 ->
    ConvT 32 k4 (all ReLU) -> Conv `output_channels` k5, linear (the loss applies the sigmoid).

    Attributes:
      output_channels: channels of the output image.
    """

    output_channels: int = 1

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
        layers = [(64, 7, 1, "VALID"), (64, 5, 1, "SAME"), (64, 5, 2, "SAME"), (32, 5, 1, "SAME"),
                  (32, 5, 2, "SAME"), (32, 4, 1, "SAME")]
        for i, (features, kernel, stride, padding) in enumerate(layers):
            x = nn.relu(ConvTranspose(features, kernel, stride, padding, name=f"deconv{i}")(x))
        return Conv(self.output_channels, 5, 1, "SAME", name="conv_out")(x)


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
            x = nn.relu(nn.Dense(width, kernel_init=keras_kernel_init, bias_init=keras_bias_init, name=f"dense{i}")(x))
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
            x = nn.relu(nn.Dense(width, kernel_init=keras_kernel_init, bias_init=keras_bias_init, name=f"dense{i}")(x))
        x = nn.Dense(math.prod(self.output_shape), kernel_init=keras_kernel_init, bias_init=keras_bias_init,
                     name="dense_out")(x)
        return x.reshape((x.shape[0],) + tuple(self.output_shape))


class DSpritesEncoder(nn.Module):
    """The dSprites conv trunk (spec 3.2, disentanglement_lib conv_encoder): 64x64 images to 256 features.

    Conv 32 k4 s2 -> Conv 32 k4 s2 -> Conv 64 k2 s2 -> Conv 64 k2 s2 -> flatten -> Dense 256, all ReLU.
    """

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
            x = nn.relu(Conv(features, kernel, 2, "SAME", name=f"conv{i}")(x))
        x = x.reshape(x.shape[0], -1)
        return nn.relu(nn.Dense(256, kernel_init=keras_kernel_init, bias_init=keras_bias_init, name="dense")(x))


class DSpritesDecoder(nn.Module):
    """The dSprites decoder (spec 3.2, disentanglement_lib deconv_decoder): latent to 64x64 logits.

    Dense 256 -> Dense 1024 -> reshape 4x4x64 -> ConvT 64 k4 s2 -> ConvT 32 k4 s2 -> ConvT 32 k4 s2
    (all ReLU) -> ConvT `output_channels` k4 s2, linear.

    Attributes:
      output_channels: channels of the output image.
    """

    output_channels: int = 1

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
        x = nn.relu(nn.Dense(256, kernel_init=keras_kernel_init, bias_init=keras_bias_init, name="dense0")(z))
        x = nn.relu(nn.Dense(1024, kernel_init=keras_kernel_init, bias_init=keras_bias_init, name="dense1")(x))
        x = x.reshape(x.shape[0], 4, 4, 64)
        for i, features in enumerate([64, 32, 32]):
            x = nn.relu(ConvTranspose(features, 4, 2, "SAME", name=f"deconv{i}")(x))
        return ConvTranspose(self.output_channels, 4, 2, "SAME", name="deconv_out")(x)


_TRUNK_SIZES = {"conv": (28, 28), "dsprites": (64, 64)}


def make_trunks(name: str, image_shape: Sequence[int]) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder trunks of one architecture for images of one shape.

    Args:
      name: "conv" (the paper's MNIST-family model, 28x28), "mlp" (any shape) or "dsprites" (64x64).
      image_shape: (height, width, channels) of one image.

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
        return ConvEncoder(), ConvDecoder(output_channels=shape[2])
    return DSpritesEncoder(), DSpritesDecoder(output_channels=shape[2])
