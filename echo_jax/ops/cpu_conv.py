"""2-D convolutions in the forms XLA:CPU runs well, with the same values and gradients as `lax`'s.

Why this module exists: on XLA:CPU the native `lax` forms of the conv trunks' layers, and of their
gradients, were 2-5x slower than the forms below (measured layer by layer and on the whole train
step, `benchmarks/conv_step.py`). GPU and TPU libraries handle strided and transposed convolutions
directly, so `echo_jax.networks` uses these forms only in the CPU branch of a
`lax.platform_dependent` and the native ones everywhere else.

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
  a transposed convolution of a 1x1 input that reaches every kernel tap (the decoder's first layer)
  are matrix products.

XLA:CPU (jaxlib 0.10) also hands 2-D convolutions to its YNNPACK library, which runs them on one
thread here: 2-3x slower than its multi-threaded Eigen kernels on these layers, forward and
backward. `cpu_compiler_options()` gives the `jax.jit` compiler options that keep convolutions on
Eigen.

Layouts are NHWC inputs and HWIO kernels throughout; paddings are explicit (low, high) pairs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Pads = tuple[tuple[int, int], ...]

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

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


def conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, strides: tuple[int, int], pads: Pads) -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, strides, pads) + bias`` in the form XLA:CPU runs best.

    Args:
      x: (batch, height, width, in_features).
      kernel: (kh, kw, in_features, out_features).
      bias: (out_features,), or None.
      strides: stride per spatial axis.
      pads: one (low, high) padding pair per spatial axis.

    Returns:
      (batch, out_height, out_width, out_features).
    """
    strides, pads = tuple(strides), tuple(pads)
    out_features = kernel.shape[-1]
    if x.shape[1:3] == kernel.shape[:2] and all(p == (0, 0) for p in pads):
        # One output pixel that sees the whole input: a matrix product.
        return _add_bias((x.reshape(x.shape[0], -1) @ kernel.reshape(-1, out_features))[:, None, None, :], bias)
    if strides == (1, 1) and x.shape[-1] == 1:
        return _conv_one_input_channel(x, kernel, bias, pads)
    if strides == (1, 1) and out_features == 1:
        return _conv_one_output_channel(x, kernel, bias, pads)
    return _conv(x, kernel, bias, strides, pads)


def conv_transpose(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, strides: tuple[int, int], pads: Pads
) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, pads) + bias`` in the form XLA:CPU runs best.

    Args:
      x: (batch, height, width, in_features).
      kernel: (kh, kw, in_features, out_features), not flipped (`transpose_kernel=False`).
      bias: (out_features,), or None.
      strides: stride per spatial axis.
      pads: padding of the dilated input, one (low, high) pair per spatial axis.

    Returns:
      (batch, out_height, out_width, out_features).
    """
    kh, kw = kernel.shape[:2]
    if x.shape[1:3] == (1, 1) and tuple(pads) == ((kh - 1, kh - 1), (kw - 1, kw - 1)):
        # A single input pixel, padded so that every tap reaches it: output pixel (i, j) is that
        # pixel times kernel tap (kh-1-i, kw-1-j), whatever the stride ('VALID' with kernel >= stride).
        return _add_bias(jnp.einsum("bi,hwio->bhwo", x[:, 0, 0, :], jnp.flip(kernel, (0, 1))), bias)
    return polyphase_conv_transpose(x, kernel, strides, pads, bias)


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
    y = _conv(x, grouped, grouped_bias, (1, 1), tuple(conv_pads))
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


def _input_grad_pads(
    kernel_size: Sequence[int], strides: Sequence[int], pads: Pads, in_sizes: Sequence[int], out_sizes: Sequence[int]
) -> Pads:
    """Dilated-input padding of the transposed convolution that is d conv(x) / d x."""
    return tuple(
        (k - 1 - low, n - 1 - (q - 1) * s + low)
        for k, s, (low, _), n, q in zip(kernel_size, strides, pads, in_sizes, out_sizes)
    )


def _kernel_and_bias_grads(
    x: jax.Array,
    cotangent: jax.Array,
    kernel_size: Sequence[int],
    strides: Sequence[int],
    pads: Pads,
    bias: jax.Array | None,
) -> tuple[jax.Array, jax.Array | None]:
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
            lhs, rhs, (1, 1), grad_pads, rhs_dilation=tuple(strides), dimension_numbers=DIMENSION_NUMBERS
        )
        if bias is not None:
            rows = rhs.reshape(-1, rhs.shape[-1])
            bias_grad += jnp.ones(rows.shape[0], rows.dtype) @ rows
    return kernel_grad.transpose(1, 2, 0, 3), None if bias is None else bias_grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, strides: tuple[int, int], pads: Pads) -> jax.Array:
    """conv(x, kernel) + bias, with gradients computed in the forms above (polyphase, batch chunks)."""
    return _add_bias(lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=DIMENSION_NUMBERS), bias)


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
        _pad_spatial(
            responses[..., i * kw + j, None], ((low_h - i, high_h + 1 + i - kh), (low_w - j, high_w + 1 + j - kw))
        )
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
            cotangent[start:stop].transpose(3, 1, 2, 0),
            x[start:stop].transpose(1, 2, 0, 3),
            (1, 1),
            grad_pads,
            dimension_numbers=DIMENSION_NUMBERS,
        )
    kernel_grad = jnp.flip(flipped_grad[0], (0, 1))[..., None]
    return input_grad, kernel_grad, None if bias is None else jnp.sum(cotangent, axis=(0, 1, 2))


_conv_one_output_channel.defvjp(_conv_one_output_channel_fwd, _conv_one_output_channel_bwd)
