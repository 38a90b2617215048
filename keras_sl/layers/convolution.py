"""Rank-generic convolution with PyTorch/MONAI padding semantics."""

from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_sl.layers.lifted_structure import (
    canonical, conv_output_pattern, joint_conv_output_pattern, lifted_windows,
)
from keras_sl.utils.device import jax_cpu_only as _jax_cpu_only
from keras_sl.utils.device import on_cpu as _on_cpu
from keras_sl.utils.device import tf_cpu_only as _tf_cpu_only
from keras_sl.utils.layout import normalize_tuple, standardize_data_format

# PyTorch's default for nn.ConvNd / nn.ConvTransposeNd (kaiming_uniform, a=sqrt(5)),
# so that a keras_sl UNet starts training from the same distribution as MONAI's.
TORCH_DEFAULT_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}


STRATEGIES = ("auto", "native", "banded")

# What two convolutions must share to run as one (Convolution.call_jointly).
_JOINT_ATTRIBUTES = (
    "rank", "kernel_size", "strides", "transposed", "data_format", "strategy", "lifted_axis_last",
    "broadcast_input", "lifted_pattern", "input_patterns", "in_channels", "lifted_length",
)


# Folding the lifted axis into channels multiplies the FLOPs by about
# length / kernel_size; past this many folded input channels the dense
# banded kernel costs more than XLA's slow Conv3D saves.
MAX_BANDED_CHANNELS = 256


def resolve_strategy(rank: int, lifted_length: int | None, in_channels: int) -> str:
    """What ``strategy="auto"`` runs for a rank-``rank`` convolution.

    On CPU: ``"banded"`` while the folded channel count stays small (it beat
    the native Conv3D on all three backends in ``benchmarks/``: XLA's CPU
    Conv3D is 10-100x slower than its 2-D convolution, and oneDNN runs the
    dense folded 2-D convolution faster than the 8-channel Conv3D).
    Elsewhere (GPU/TPU) and for 2-D networks: ``"native"``.
    """
    if rank != 3 or not lifted_length:
        return "native"
    if _on_cpu() and lifted_length * in_channels <= MAX_BANDED_CHANNELS:
        return "banded"
    return "native"


@functools.lru_cache(maxsize=None)  # a constant per layer shape: build it once
def _band(length: int, out_length: int, k: int, s: int, p: int, transposed: bool):
    """0/1 tensor ``band[tap, i, o]``: input position i reaches output o
    (:func:`keras_sl.layers.lifted_structure.lifted_windows`)."""
    windows = lifted_windows(length, k, s, p, transposed)
    if len(windows) != out_length:
        raise ValueError(f"A lifted length of {length} gives {len(windows)} outputs, not {out_length}.")
    band = np.zeros((k, length, out_length), "float32")
    for o, window in enumerate(windows):
        for tap, i in enumerate(window):
            if i >= 0:
                band[tap, i, o] = 1.0
    return band


def patterns_config(patterns) -> list | None:
    """``input_patterns`` as JSON-friendly lists (for ``get_config``)."""
    return None if patterns is None else [None if p is None else list(p) for p in patterns]


def _checked_pattern(pattern, what: str) -> tuple[int, ...] | None:
    """``pattern`` as a tuple, which must already be canonical."""
    if pattern is None:
        return None
    checked = canonical(pattern)
    if tuple(int(i) for i in pattern) != checked:
        raise ValueError(
            f"{what} must number stored slices 0, 1, ... in order of first appearance, got "
            f"{tuple(pattern)}; use {checked} (keras_sl.layers.lifted_structure.canonical)."
        )
    return checked


def _transposed_by_phases_pays() -> bool:
    """XLA on CPU runs input-dilated (transposed) convolutions and their
    kernel gradients 7-12x slower than ordinary ones; decompose them there."""
    return keras.backend.backend() == "jax" and _jax_cpu_only()


def joint_convolutions_pay() -> bool:
    """Whether two convolutions of one input (a strided residual unit's first
    convolution and its residual path) run as one with concatenated kernels
    (:meth:`Convolution.call_jointly`). Only XLA on CPU gains: SL-UNet 5L/1Res
    inference at 256², batch 4, 44.4 -> 43.1 ms on JAX (train step unchanged);
    torch's inference graph slowed 41 -> 53 ms (the split outputs are strided
    views), TensorFlow unchanged within noise (same-process alternating A/B).
    :data:`JOINT_CONVOLUTIONS` overrides (True/False; None: this rule)."""
    if JOINT_CONVOLUTIONS is not None:
        return bool(JOINT_CONVOLUTIONS)
    return keras.backend.backend() == "jax" and _jax_cpu_only()


# None: joint_convolutions_pay decides; True/False force it (A/B runs, tests).
JOINT_CONVOLUTIONS = None


def _pad_spatial(x, pads, data_format):
    rank = len(pads)
    first = 1 if data_format == "channels_last" else 2
    widths = [(0, 0)] * (rank + 2)
    for i, p in enumerate(pads):
        widths[first + i] = (p, p)
    return ops.pad(x, widths)


def _crop_transposed(y, kernel_size, strides, data_format):
    """Crop Keras' "valid" transposed output to PyTorch's alignment.

    Keras returns ``L*s + max(k-s, 0)`` elements per axis; PyTorch with
    ``padding=p=(k-1)//2, output_padding=s-1`` keeps ``L*s`` of them
    starting at ``p``, zeros (then the bias) past the end.
    """
    rank = len(kernel_size)
    first = 1 if data_format == "channels_last" else 2
    slices = [slice(None)] * (rank + 2)
    widths = [(0, 0)] * (rank + 2)
    for i, (k, s) in enumerate(zip(kernel_size, strides)):
        p = (k - 1) // 2
        behind = max(k - s, 0) - p  # >0: crop behind; <0: zeros to append
        slices[first + i] = slice(p, -behind if behind > 0 else None)
        widths[first + i] = (0, max(0, -behind))
    y = y[tuple(slices)]
    if any(w[1] for w in widths):
        y = ops.pad(y, widths)
    return y


def _native_layout(fn, x, data_format):
    """Run a conv op in the layout the backend executes natively.

    Keras' TensorFlow backend silently routes channels_first 3-D
    convolutions through XLA on CPU, which is 30-100x slower than the
    native kernel; we transpose to channels_last around the op instead.
    """
    rank = len(x.shape) - 2
    if data_format == "channels_last" and keras.backend.backend() == "torch":
        # A permuted view is a channels-first tensor in torch's channels_last
        # memory format, which PyTorch convolves 3-5x faster than plain NCHW
        # on CPU; Keras' own channels_last path makes two copies instead.
        perm = (0, rank + 1, *range(1, rank + 1))
        inv = (0, *range(2, rank + 2), 1)
        return ops.transpose(fn(ops.transpose(x, perm), "channels_first"), inv)
    if (
        data_format == "channels_first"
        and keras.backend.backend() == "tensorflow"
        and _tf_cpu_only()
    ):
        perm = (0, *range(2, rank + 2), 1)
        inv = (0, rank + 1, *range(1, rank + 1))
        return ops.transpose(fn(ops.transpose(x, perm), "channels_last"), inv)
    return fn(x, data_format)


def _phase_offsets(k: int, s: int) -> tuple[int, list[dict[int, int]]]:
    """Sub-pixel decomposition of one axis of a PyTorch-aligned transposed conv.

    Output ``o = s * j + r`` (phase ``r``) sums ``x[j + d] * w[t]`` over the
    taps ``t`` with ``(r + p - t) % s == 0`` and ``d = (r + p - t) // s``.
    Returns the smallest offset ``d`` over all phases and, per phase,
    ``{d - d_min: t}``.
    """
    p = (k - 1) // 2
    phases = [{(r + p - t) // s: t for t in range(k) if (r + p - t) % s == 0} for r in range(s)]
    d_min = min(min(taps, default=0) for taps in phases)
    return d_min, [{d - d_min: t for d, t in taps.items()} for taps in phases]


def _transposed_by_phases(x, kernel, kernel_size, strides, data_format, defer_shuffle: bool = False):
    """PyTorch-aligned transposed convolution as one ordinary stride-1
    convolution with ``prod(strides)`` times the filters (one group per output
    phase) followed by a pixel shuffle (:func:`_pixel_shuffle`).

    Exact; a 3x3, stride-2 kernel becomes a 2x2 one with 4x the filters, and
    the input-dilated convolutions that XLA runs slowly on CPU (forward and
    gradients) disappear. ``defer_shuffle=True`` returns the phase-layout
    output and leaves the shuffle to the caller.
    """
    rank = len(kernel_size)
    channels_last = data_format == "channels_last"
    kernel = ops.swapaxes(kernel, -1, -2)  # (..., out, in) -> (..., in, out)
    plans = [_phase_offsets(k, s) for k, s in zip(kernel_size, strides)]
    support = [1 + max(max(taps, default=0) for taps in phases) for _, phases in plans]

    def phase_kernel(axis, w, phase_choice):
        if axis == rank:
            return w
        taps = plans[axis][1][phase_choice[axis]]
        zero = ops.zeros_like(ops.take(w, 0, axis=axis))
        w = ops.stack([ops.take(w, taps[m], axis=axis) if m in taps else zero for m in range(support[axis])],
                      axis=axis)
        return phase_kernel(axis + 1, w, phase_choice)

    choices = list(itertools.product(*[range(s) for s in strides]))
    # Output channels ordered (phase..., filter) for channels_last and
    # channels_first alike; the shuffle knows the order.
    big = ops.concatenate([phase_kernel(0, kernel, c) for c in choices], axis=-1)
    first = 1 if channels_last else 2
    widths = [(0, 0)] * (rank + 2)
    index = [slice(None)] * (rank + 2)
    for axis, (d_min, _) in enumerate(plans):
        widths[first + axis] = (max(0, -d_min), max(0, support[axis] - 1 + d_min))
        if d_min > 0:
            index[first + axis] = slice(d_min, None)
    # XLA's CPU convolution runs 4x faster with padding inside the op than on
    # a pre-padded input with "valid" (80->64 channels at 128^2: 12 vs 49 ms),
    # so use "same" whenever its padding, (k-1)//2 before and the rest after,
    # is the one needed (3x3 stride-2 kernels: a 2x2 one padded (0, 1)).
    same = [(0, 0)] * (rank + 2)
    for axis, k in enumerate(support):
        same[first + axis] = ((k - 1) // 2, k - 1 - (k - 1) // 2)
    if widths == same and all(d_min <= 0 for d_min, _ in plans):
        xp, padding = x, "same"
    else:
        xp, padding = (ops.pad(x, widths) if any(w != (0, 0) for w in widths) else x), "valid"
        if any(d_min > 0 for d_min, _ in plans):
            xp = xp[tuple(index)]
    y = _native_layout(
        lambda t, fmt: ops.conv(t, big, strides=1, padding=padding, data_format=fmt), xp, data_format
    )
    if defer_shuffle:
        return y
    return _pixel_shuffle(y, strides, data_format)


def _pixel_shuffle(y, strides, data_format):
    """Phase-layout output of :func:`_transposed_by_phases` -> the transposed
    convolution's output: channels (phase..., filter) become ``strides``
    times more positions along each spatial axis."""
    if all(s == 1 for s in strides):
        return y
    rank = len(strides)
    channels_last = data_format == "channels_last"
    shape = list(ops.shape(y))
    spatial = shape[1 : rank + 1] if channels_last else shape[2:]
    filters = y.shape[-1 if channels_last else 1] // math.prod(strides)
    if channels_last:  # (B, *L, *s, F) -> (B, L1, s1, L2, s2, ..., F)
        y = ops.reshape(y, (-1, *spatial, *strides, filters))
        perm = [0] + [a for i in range(rank) for a in (1 + i, 1 + rank + i)] + [1 + 2 * rank]
    else:  # (B, *s, F, *L) -> (B, F, L1, s1, L2, s2, ...)
        y = ops.reshape(y, (-1, *strides, filters, *spatial))
        perm = [0, 1 + rank] + [a for i in range(rank) for a in (2 + rank + i, 1 + i)]
    y = ops.transpose(y, perm)
    out = [None if length is None else length * s for length, s in zip(spatial, strides)]
    return ops.reshape(y, (-1, *out, filters) if channels_last else (-1, filters, *out))


def shuffle_is_deferred(transposed: bool, data_format: str) -> bool:
    """Whether :meth:`Convolution.call_deferred` hands back a transposed
    convolution's output before its pixel shuffle: where the transposed
    convolution runs as phases (XLA on CPU) and channels are last."""
    return transposed and data_format == "channels_last" and _transposed_by_phases_pays()


def _conv_nd(x, kernel, kernel_size, strides, transposed, data_format, defer_shuffle: bool = False):
    """PyTorch-padded (transposed) convolution of any rank, without bias.

    ``defer_shuffle=True`` (only where :func:`shuffle_is_deferred`): a
    transposed convolution's phase-layout output, before
    :func:`_pixel_shuffle`."""
    if transposed and _transposed_by_phases_pays():
        return _transposed_by_phases(x, kernel, kernel_size, strides, data_format, defer_shuffle)
    if transposed:
        y = _native_layout(
            lambda t, fmt: ops.conv_transpose(
                t, kernel, strides=strides, padding="valid", data_format=fmt
            ),
            x,
            data_format,
        )
        return _crop_transposed(y, kernel_size, strides, data_format)
    if all(s == 1 for s in strides):
        padding = "same"  # identical to symmetric padding for odd k
    else:
        padding = "valid"
        pads = tuple((k - 1) // 2 for k in kernel_size)
        if any(pads):
            x = _pad_spatial(x, pads, data_format)
    return _native_layout(
        lambda t, fmt: ops.conv(t, kernel, strides=strides, padding=padding, data_format=fmt),
        x,
        data_format,
    )


# Convolutions with few outputs run far below peak in every backend's kernel
# (16 -> 1 channels, 3x3, batch 4 at 256^2: TF 3.1 ms, JAX 4.9, torch 15 ms);
# up to this many (filters x taps) outputs, :func:`_conv_by_taps` is used.
MAX_TAP_OUTPUTS = 32


def _conv_by_taps(x, kernel, kernel_size, data_format):
    """Stride-1, PyTorch-padded convolution as one matmul to (tap, filter)
    channels followed by a shifted sum of the taps: dense and memory-bound
    where a convolution with few output channels is not (TF 2.0 vs 3.1 ms,
    JAX 1.4 vs 4.9, torch 4.0 vs 15 ms for the case above). Exact."""
    if data_format == "channels_first":
        return ops.moveaxis(_conv_by_taps(ops.moveaxis(x, 1, -1), kernel, kernel_size, "channels_last"), -1, 1)
    rank = len(kernel_size)
    in_channels, filters = kernel.shape[-2], kernel.shape[-1]
    taps = math.prod(kernel_size)
    # (*k, in, out) -> (in, *k, out) -> (in, taps * out)
    matrix = ops.reshape(ops.moveaxis(kernel, -2, 0), (in_channels, taps * filters))
    if keras.backend.backend() == "torch":  # its CPU matmul is slow for this shape; a 1x1 conv is not
        pointwise = ops.reshape(matrix, (1,) * rank + (in_channels, taps * filters))
        z = _native_layout(lambda t, fmt: ops.conv(t, pointwise, data_format=fmt), x, "channels_last")
    else:
        z = ops.tensordot(x, matrix, axes=1)
    shape = ops.shape(x)
    plane = shape[1 : rank + 1]
    pads = [(k - 1) // 2 for k in kernel_size]
    z = ops.pad(z, [(0, 0)] + [(p, k - 1 - p) for p, k in zip(pads, kernel_size)] + [(0, 0)])
    total = None
    for t, offsets in enumerate(itertools.product(*[range(k) for k in kernel_size])):
        index = (slice(None), *[slice(o, o + n) for o, n in zip(offsets, plane)],
                 slice(t * filters, (t + 1) * filters))
        total = z[index] if total is None else total + z[index]
    return total


@keras.saving.register_keras_serializable(package="keras_sl")
class Convolution(keras.layers.Layer):
    """N-D convolution (or transposed convolution) that pads like PyTorch.

    Keras' ``padding="same"`` pads strided convolutions on the right only,
    PyTorch pads ``(k - 1) // 2`` on both sides. This layer reproduces
    ``torch.nn.ConvNd(padding=(k-1)//2)`` and
    ``torch.nn.ConvTransposeNd(padding=(k-1)//2, output_padding=stride-1)``
    exactly, so MONAI weights load without changes and spatial sizes follow
    MONAI (``H -> H / s`` down, ``H -> H * s`` up).

    The kernel is stored in Keras layout: ``(*kernel_size, in, out)`` for a
    convolution, ``(*kernel_size, out, in)`` for a transposed one.

    Args:
        rank: number of spatial dimensions (1, 2 or 3).
        filters: output channels.
        kernel_size: int or tuple of ``rank`` odd ints.
        strides: int or tuple of ``rank`` ints.
        transposed: build a transposed (up-sampling) convolution.
        use_bias: add a bias.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        strategy: how a rank >= 2 convolution runs; all give the same
            outputs and gradients from the same weights. ``"native"``: the
            backend's N-D convolution. ``"banded"``: the first spatial axis
            (the lifted one in SL models) is folded into the channels and the
            kernel becomes block-banded over it, so a (rank-1)-D convolution
            does the work. ``"auto"``: :func:`resolve_strategy`.
        lifted_axis_last: the input stores its first logical spatial axis
            last, ``(B, H, W, D, C)`` instead of ``(B, D, H, W, C)``, which makes
            the banded fold a free reshape. ``kernel_size``, ``strides`` and
            the kernel stay in logical order, so weights do not depend on it.
        broadcast_input: promise that the input is constant along the lifted
            axis (a lifted image, the first layer of an SL network). Unless
            ``strategy="native"``, only one slice is read and the kernel's taps
            along that axis are summed per output position: one
            (rank-1)-D convolution with ``m`` times fewer FLOPs, exact for such
            inputs (and wrong for any other input).
        lifted_pattern: the input is *compact* along the lifted axis: it
            stores only distinct slices, and logical slice ``i`` equals stored
            slice ``lifted_pattern[i]`` (see
            :mod:`keras_sl.layers.lifted_structure`). The output is compact
            too, in :attr:`output_pattern`; the work scales with the number of
            distinct slices, not ``len(lifted_pattern)``. Runs the banded path
            (any device); not for ``strategy="native"``.
        input_patterns: the layer takes a *list* of inputs whose channels it
            reads as if concatenated in that order (a UNet skip connection
            without the concatenation), input ``j`` compact with pattern
            ``input_patterns[j]`` (``None``: all slices stored). Each input is
            folded on its own and the folded tensors meet in one convolution,
            so a compact skip is never expanded. The output is compact in
            :attr:`output_pattern` (``None`` when all its slices differ).
            Same weights as the single-input layer. Banded path only.

    Example:
    >>> import numpy as np
    >>> layer = Convolution(rank=3, filters=8, kernel_size=3, strides=2)
    >>> tuple(layer(np.zeros((1, 16, 32, 32, 3), "float32")).shape)
    (1, 8, 16, 16, 8)
    """

    def __init__(
        self,
        rank: int,
        filters: int,
        kernel_size=3,
        strides=1,
        transposed: bool = False,
        use_bias: bool = True,
        data_format: str | None = None,
        kernel_initializer=TORCH_DEFAULT_INIT,
        bias_initializer="zeros",
        strategy: str = "auto",
        lifted_axis_last: bool = False,
        broadcast_input: bool = False,
        lifted_pattern: Sequence[int] | None = None,
        input_patterns: Sequence[Sequence[int] | None] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if rank not in (1, 2, 3):
            raise ValueError(f"rank must be 1, 2 or 3, got {rank}.")
        self.rank = rank
        self.filters = int(filters)
        self.kernel_size = normalize_tuple(kernel_size, rank, "kernel_size")
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(
                f"kernel_size must be odd (MONAI 'same' padding), got "
                f"{self.kernel_size}."
            )
        self.strides = normalize_tuple(strides, rank, "strides")
        self.transposed = bool(transposed)
        self.use_bias = bool(use_bias)
        self.data_format = standardize_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.pads = tuple((k - 1) // 2 for k in self.kernel_size)
        if strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {STRATEGIES}, got {strategy!r}. "
                "'auto' picks the fastest exact path for the backend and device."
            )
        self.strategy = strategy
        self.lifted_axis_last = bool(lifted_axis_last)
        self.broadcast_input = bool(broadcast_input)
        if self.broadcast_input and (self.transposed or rank < 2):
            raise ValueError(
                "broadcast_input=True needs a (non-transposed) convolution of rank >= 2: it "
                "reads one slice of an input that is constant along its first spatial axis."
            )
        self.lifted_pattern = _checked_pattern(lifted_pattern, "lifted_pattern")
        self.input_patterns = None
        if input_patterns is not None:
            if lifted_pattern is not None:
                raise ValueError(
                    "Give lifted_pattern (one compact input) or input_patterns (a list of "
                    "inputs), not both."
                )
            self.input_patterns = tuple(
                _checked_pattern(pattern, f"input_patterns[{j}]")
                for j, pattern in enumerate(input_patterns)
            )
            lengths = {len(p) for p in self.input_patterns if p is not None}
            if not self.input_patterns or len(lengths) > 1:
                raise ValueError(
                    f"input_patterns must be a non-empty list of patterns (or None) of one "
                    f"lifted length, got {input_patterns}."
                )
        if self.lifted_pattern is not None or self.input_patterns is not None:
            if rank < 2 or self.broadcast_input or strategy == "native":
                raise ValueError(
                    "lifted_pattern and input_patterns need a convolution of rank >= 2, without "
                    "broadcast_input, and a strategy other than 'native' (the compact slices "
                    "run through the banded path); drop them (and concatenate the inputs) to "
                    "run a plain convolution on full-length inputs."
                )
        self.lifted_length = None

    @property
    def output_pattern(self) -> tuple[int, ...] | None:
        """Lifted pattern of the output (None when the input is not compact;
        with ``input_patterns``, also None when all output slices differ)."""
        if self.lifted_pattern is not None:
            k, s, p = self.kernel_size[0], self.strides[0], self.pads[0]
            return conv_output_pattern(self.lifted_pattern, k, s, p, self.transposed)[0]
        if self.input_patterns is not None and any(p is not None for p in self.input_patterns):
            pattern = self._joint_bands()[0]
            return None if pattern == tuple(range(len(pattern))) else pattern
        return None

    def _joint_bands(self):
        """Merged output pattern and one band per input (``input_patterns``)."""
        length = next((len(p) for p in self.input_patterns if p is not None), self.lifted_length)
        if length is None:
            raise ValueError(f"{self.name}: the lifted length is unknown until the layer is built.")
        patterns = tuple(tuple(range(length)) if p is None else p for p in self.input_patterns)
        k, s, p = self.kernel_size[0], self.strides[0], self.pads[0]
        return joint_conv_output_pattern(patterns, k, s, p, self.transposed)

    # -- helpers -----------------------------------------------------------
    @property
    def _channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    @property
    def _first_spatial(self) -> int:
        return 1 if self.data_format == "channels_last" else 2

    @property
    def _physical_order(self) -> tuple[int, ...]:
        """Logical (kernel) axis stored at each physical spatial axis."""
        if self.lifted_axis_last:
            return (*range(1, self.rank), 0)
        return tuple(range(self.rank))

    def _physical(self, values: tuple) -> tuple:
        return tuple(values[i] for i in self._physical_order)

    @property
    def _lifted_position(self) -> int:
        """Tensor axis holding the lifted (logical first) spatial axis."""
        return self._first_spatial + self._physical_order.index(0)

    def build(self, input_shape):
        if self.input_patterns is not None:
            self._build_parts(input_shape)
        else:
            self.in_channels = self._known_channels(input_shape)
            self.lifted_length = (
                input_shape[self._lifted_position] if self.rank > 1 else None
            )
        if self.lifted_pattern is not None:
            stored = len(set(self.lifted_pattern))
            if self.lifted_length not in (None, stored):
                raise ValueError(
                    f"{self.name}: lifted_pattern {self.lifted_pattern} has {stored} distinct "
                    f"slices but the input stores {self.lifted_length} along the lifted axis "
                    f"(input shape {input_shape}); compact the input with "
                    "keras_sl.layers.LiftedSlices first."
                )
            self.lifted_length = stored
        if self.transposed:
            shape = (*self.kernel_size, self.filters, self.in_channels)
        else:
            shape = (*self.kernel_size, self.in_channels, self.filters)
        self.kernel = self.add_weight(
            name="kernel", shape=shape, initializer=self.kernel_initializer
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer
            )
        else:
            self.bias = None

    def _known_channels(self, shape) -> int:
        channels = shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                "The channel dimension of the input must be known to build "
                f"{self.name}; got input shape {shape}."
            )
        return int(channels)

    def _build_parts(self, input_shapes):
        """Channels and lifted lengths of a list of inputs (``input_patterns``)."""
        if not isinstance(input_shapes, (list, tuple)) or not isinstance(input_shapes[0], (list, tuple)) \
                or len(input_shapes) != len(self.input_patterns):
            raise ValueError(
                f"{self.name} has input_patterns for {len(self.input_patterns)} inputs; call it "
                f"on a list of that many tensors, got input shape {input_shapes}."
            )
        self.part_channels = tuple(self._known_channels(shape) for shape in input_shapes)
        self.in_channels = sum(self.part_channels)
        logical = {len(p) for p in self.input_patterns if p is not None}
        for pattern, shape in zip(self.input_patterns, input_shapes):
            stored = shape[self._lifted_position]
            expected = len(set(pattern)) if pattern is not None else next(iter(logical), stored)
            if stored is not None and expected is not None and stored != expected:
                raise ValueError(
                    f"{self.name}: an input with pattern {pattern} should store {expected} "
                    f"slices along the lifted axis, got input shapes {input_shapes}."
                )
            if pattern is None and stored is not None:
                logical.add(stored)
        if len(logical) != 1:
            raise ValueError(
                f"{self.name}: the lifted length of the inputs must be known and equal; got "
                f"input shapes {input_shapes} with input_patterns {self.input_patterns}."
            )
        self.lifted_length = logical.pop()

    def _output_length(self, length, axis):
        if length is None:
            return None
        k, s, p = self.kernel_size[axis], self.strides[axis], self.pads[axis]
        if self.transposed:
            return (length - 1) * s + k - 2 * p + (s - 1)
        return (length + 2 * p - k) // s + 1

    def compute_output_shape(self, input_shape):
        if self.input_patterns is not None:
            input_shape = input_shape[next(
                (j for j, p in enumerate(self.input_patterns) if p is None), 0)]
        input_shape = list(input_shape)
        first = self._first_spatial
        for i, logical in enumerate(self._physical_order):
            input_shape[first + i] = self._output_length(input_shape[first + i], logical)
        input_shape[self._channel_axis] = self.filters
        if self.lifted_pattern is not None:
            input_shape[self._lifted_position] = len(set(self.output_pattern))
        elif self.input_patterns is not None:
            input_shape[self._lifted_position] = len(set(self._joint_bands()[0]))
        return tuple(input_shape)

    # -- forward -----------------------------------------------------------
    @property
    def resolved_strategy(self) -> str:
        """The strategy ``call`` runs: ``"native"`` or ``"banded"``."""
        if self.strategy != "auto":
            return self.strategy
        return resolve_strategy(self.rank, self.lifted_length, self.in_channels)

    @property
    def uses_broadcast_input(self) -> bool:
        return self.broadcast_input and self.strategy != "native" and bool(self.lifted_length)

    def call(self, inputs, add_bias: bool = True, add_input: bool = False):
        """``add_bias=False`` leaves the bias out (a following instance norm
        cancels it; see ``keras_sl.layers.InstanceNorm``). ``add_input=True``
        returns ``inputs + conv(inputs)`` (stride 1, ``filters`` input
        channels) as one convolution: the identity joins the kernel's centre
        tap, so the sum is not a separate pass (and, in a compiled graph, the
        output is a convolution's result that consumers read, not an
        element-wise expression they recompute)."""
        y = self._convolve(inputs, kernel=self._with_identity(inputs.dtype) if add_input else None)
        if self.use_bias and add_bias:
            y = self._plus_bias(y, self.bias)
        return y

    def call_deferred(self, inputs):
        """``(values, finish)``: the output without bias is ``finish(values)``.

        Where a transposed convolution runs as phases
        (:func:`shuffle_is_deferred`), ``values`` is its output before the
        pixel shuffle, viewed as ``(B, ..., filters)``: per sample and filter
        the same numbers as the output, in another order. Per-filter
        statistics and element-wise maps (a norm and its activation) can run
        on it, and ``finish`` then shuffles once, fused with them (XLA on
        CPU: one pass over the up-sampled tensor fewer; element-wise kernel
        time of a profiled JAX SL-UNet 5L/1Res inference 22-24 -> 18-19 ms).
        Elsewhere ``values`` is ``self(inputs, add_bias=False)`` and
        ``finish`` is None (nothing to do).

        Example:
        >>> import numpy as np
        >>> conv = Convolution(rank=2, filters=4, strides=2, transposed=True)
        >>> x = np.random.rand(1, 8, 8, 3).astype("float32")
        >>> values, finish = conv.call_deferred(x)
        >>> y = values if finish is None else finish(values)
        >>> bool(np.allclose(keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(conv(x, add_bias=False)), atol=1e-5))
        True
        """
        if not self.built:
            self.build(inputs.shape)
        if self.uses_broadcast_input or not shuffle_is_deferred(self.transposed, self.data_format):
            return self(inputs, add_bias=False), None
        return self._convolve(inputs, defer_shuffle=True)

    def _with_identity(self, dtype):
        """The kernel plus the identity at its centre tap (``add_input``)."""
        if self.transposed or any(st != 1 for st in self.strides) or self.in_channels != self.filters \
                or self.uses_broadcast_input:
            raise ValueError(
                f"{self.name}: add_input=True needs a stride-1, non-transposed convolution with as "
                f"many input channels as filters ({self.filters}), got strides {self.strides}, "
                f"{self.in_channels} input channels, transposed={self.transposed}."
            )
        centre = np.zeros(self.kernel_size, "float32")
        centre[tuple(k // 2 for k in self.kernel_size)] = 1.0
        eye = ops.eye(self.filters, dtype=dtype)
        return ops.cast(self.kernel, dtype) + ops.einsum("...,ab->...ab", ops.cast(centre, dtype), eye)

    def call_jointly(self, inputs, others: Sequence["Convolution"], add_bias: Sequence[bool] | None = None):
        """This convolution's output and those of ``others`` on the same
        ``inputs``, as one convolution: their kernels are concatenated along
        the filters, so the input is read (and, on the banded path, folded)
        once and the matrix products are wider. ``others`` must match this
        layer in everything but ``filters`` and weights (kernel size,
        strides, layout, strategy, lifted structure); a MONAI residual unit's
        strided first convolution and its residual path do.
        ``add_bias[j]=False`` leaves output ``j``'s bias out (output 0 is
        this layer's).

        Example:
        >>> import numpy as np
        >>> a = Convolution(rank=2, filters=4, strides=2)
        >>> b = Convolution(rank=2, filters=6, strides=2)
        >>> x = np.random.rand(1, 8, 8, 3).astype("float32")
        >>> ya, yb = a.call_jointly(x, [b])
        >>> [tuple(t.shape) for t in (ya, yb)]
        [(1, 4, 4, 4), (1, 4, 4, 6)]
        >>> bool(np.allclose(keras.ops.convert_to_numpy(yb), keras.ops.convert_to_numpy(b(x)), atol=1e-5))
        True
        """
        convs = (self, *others)
        if self.transposed:
            raise ValueError(
                f"{self.name}: call_jointly runs ordinary convolutions (a transposed kernel stores "
                "its filters on another axis); call transposed convolutions separately."
            )
        add_bias = (True,) * len(convs) if add_bias is None else tuple(add_bias)
        if len(add_bias) != len(convs):
            raise ValueError(f"add_bias needs one flag per output ({len(convs)}), got {len(add_bias)}.")
        for conv in convs:  # built before comparing: in_channels and lifted_length come from the input
            if not conv.built:
                conv.build(inputs.shape)
        for other in others:
            mismatch = [name for name in _JOINT_ATTRIBUTES if getattr(other, name) != getattr(self, name)]
            if mismatch:
                raise ValueError(
                    f"{self.name} and {other.name} cannot run as one convolution: they differ in "
                    f"{', '.join(mismatch)}. Call them separately."
                )
        dtype = inputs.dtype
        kernel = ops.concatenate([ops.cast(conv.kernel, dtype) for conv in convs], axis=-1)
        filters = [conv.filters for conv in convs]
        y = self._convolve(inputs, kernel=kernel, filters=sum(filters))
        outputs = ops.split(y, list(itertools.accumulate(filters[:-1])), axis=self._channel_axis)
        return [
            conv._plus_bias(out, ops.cast(conv.bias, dtype)) if conv.use_bias and add else out
            for conv, out, add in zip(convs, outputs, add_bias)
        ]

    def _convolve(self, inputs, defer_shuffle: bool = False, kernel=None, filters: int | None = None):
        """The convolution without bias (``defer_shuffle``: ``call_deferred``'s
        pair; ``kernel``: use this one instead of the layer's, with
        ``filters`` outputs when that differs from the layer's)."""
        if self.uses_broadcast_input:
            return self._broadcast(inputs, kernel, filters)
        if self.lifted_pattern is not None or self.input_patterns is not None or (
            self.resolved_strategy == "banded" and self.rank > 1 and self.lifted_length
        ):
            return self._banded(inputs, defer_shuffle, kernel, filters)
        kernel = self.kernel if kernel is None else kernel
        if self._physical_order != tuple(range(self.rank)):
            perm = (*self._physical_order, self.rank, self.rank + 1)
            kernel = ops.transpose(kernel, perm)
        strides = self._physical(self.strides)
        y = _conv_nd(inputs, kernel, self._physical(self.kernel_size), strides, self.transposed,
                     self.data_format, defer_shuffle)
        if not defer_shuffle:
            return y
        return self._deferred(y, strides, 1, lambda t: t)

    def _deferred(self, y, strides, out_length: int, unfold):
        """``call_deferred``'s pair for a phase-layout, channels-last ``y``
        holding (phase, lifted position, filter) channels."""
        shape = ops.shape(y)
        view = ops.reshape(y, (-1, *shape[1:-1], math.prod(strides) * out_length, self.filters))

        def finish(values):
            values = ops.reshape(values, (-1, *shape[1:-1], shape[-1]))
            return unfold(_pixel_shuffle(values, strides, self.data_format))

        return view, finish

    def _plus_bias(self, y, bias):
        """``y`` plus a per-filter vector, on the channel axis of this layer's
        layout (any number of spatial axes)."""
        if self.data_format == "channels_last":
            return y + bias
        return y + ops.reshape(bias, (1, self.filters) + (1,) * (len(y.shape) - 2))

    def _broadcast(self, x, kernel=None, filters: int | None = None):
        """Convolution of an input that repeats one slice along the lifted axis.

        Output position ``o`` sees the slice through the taps that land
        inside the input, so it is one (rank-1)-D convolution of the slice
        with the sum of those taps; all positions together are a single
        convolution whose output channels are (position, filter) pairs.
        """
        length = int(self.lifted_length)
        k, s, p = self.kernel_size[0], self.strides[0], self.pads[0]
        out_length = self._output_length(length, 0)
        valid = _band(length, out_length, k, s, p, False).sum(axis=1)  # (k, out_length)
        channels_last = self.data_format == "channels_last"
        index = [slice(None)] * (self.rank + 2)
        index[self._lifted_position] = 0
        image = x[tuple(index)]
        plane = "hw"[: self.rank - 1]
        spec = f"ko,k{plane}ab->{plane}a" + ("ob" if channels_last else "bo")
        filters = self.filters if filters is None else filters
        kernel = self.kernel if kernel is None else kernel
        kernel = ops.einsum(spec, ops.cast(valid, x.dtype), ops.cast(kernel, x.dtype))
        kernel = ops.reshape(kernel, (*self.kernel_size[1:], self.in_channels, out_length * filters))
        y = _conv_nd(image, kernel, self.kernel_size[1:], self.strides[1:], False, self.data_format)
        return self._unfold(y, out_length, filters)

    def _unfold(self, y, out_length: int, filters: int | None = None):
        """Folded (rank-1)-D output -> this layer's layout: split the
        (position, filter) channels and put the lifted axis where it lives."""
        filters = self.filters if filters is None else filters
        shape = ops.shape(y)
        if self.data_format == "channels_last":  # (B, *plane, m*F) -> (B, *plane, m, F)
            y = ops.reshape(y, (-1, *shape[1 : self.rank], out_length, filters))
            folded_at = self.rank
        else:  # (B, F*m, *plane) -> (B, F, m, *plane)
            y = ops.reshape(y, (-1, filters, out_length, *shape[2:]))
            folded_at = 2
        if folded_at != self._lifted_position:
            y = ops.moveaxis(y, folded_at, self._lifted_position)
        return y

    def _bands(self) -> tuple[int, tuple]:
        """Stored output length and one band per input, ``band[tap, i, o]``."""
        k, s, p = self.kernel_size[0], self.strides[0], self.pads[0]
        if self.input_patterns is not None:
            pattern, bands = self._joint_bands()
            return len(set(pattern)), bands
        if self.lifted_pattern is not None:  # compact in and out
            pattern, band = conv_output_pattern(self.lifted_pattern, k, s, p, self.transposed)
            return len(set(pattern)), (band,)
        length = int(self.lifted_length)
        out_length = self._output_length(length, 0)
        return out_length, (_band(length, out_length, k, s, p, self.transposed),)

    def _fold(self, x, length: int, channels: int):
        """(B, ..., lifted, ..., C) -> (rank-1)-D tensor with (lifted, C) channels."""
        channels_last = self.data_format == "channels_last"
        # Move the lifted axis next to the channels (free when the layout
        # already has it there: channels_last with the lifted axis last, or
        # channels_first with it first).
        fold_at = self.rank if channels_last else 2
        if self._lifted_position != fold_at:
            x = ops.moveaxis(x, self._lifted_position, fold_at)
        shape = ops.shape(x)
        if channels_last:
            return ops.reshape(x, (-1, *shape[1 : self.rank], length * channels))
        return ops.reshape(x, (-1, channels * length, *shape[3:]))

    def _banded(self, inputs, defer_shuffle: bool = False, kernel=None, filters: int | None = None):
        """The lifted axis folded into channels: one (rank-1)-D convolution.

        The kernel becomes block-banded over (lifted position, channel)
        pairs, built from the same Conv3D weights by a constant 0/1 band
        tensor, so checkpoints and gradients are shared with ``"native"``.
        Several inputs (``input_patterns``) are folded one by one, and their
        folded tensors and kernels concatenated: one convolution still.
        """
        out_length, bands = self._bands()
        filters = self.filters if filters is None else filters
        if self.input_patterns is None:
            inputs, part_channels = [inputs], (self.in_channels,)
        else:
            part_channels = self.part_channels
        channels_last = self.data_format == "channels_last"
        dtype = inputs[0].dtype
        kernel = ops.cast(self.kernel if kernel is None else kernel, dtype)
        plane = "hw"[: self.rank - 1]
        # band[k, i, o]: input position i feeds output position o through tap k.
        if self.transposed:  # kernel (..., out, in) -> folded (..., out*, in*)
            order = "oaib" if channels_last else "aobi"
        else:  # kernel (..., in, out) -> folded (..., in*, out*)
            order = "iaob" if channels_last else "aibo"
        spec = f"kio,k{plane}ab->{plane}{order}"
        folded, bigs, offset = [], [], 0
        for x, band, channels in zip(inputs, bands, part_channels):
            length = band.shape[1]
            folded.append(self._fold(x, length, channels))
            if self.transposed:
                part = kernel[..., offset : offset + channels]
            else:
                part = kernel[..., offset : offset + channels, :]
            offset += channels
            big = ops.einsum(spec, ops.cast(band, dtype), part)
            if self.transposed:
                bigs.append(ops.reshape(big, (*self.kernel_size[1:], out_length * filters, length * channels)))
            else:
                bigs.append(ops.reshape(big, (*self.kernel_size[1:], length * channels, out_length * filters)))
        if len(folded) > 1:
            folded = ops.concatenate(folded, axis=-1 if channels_last else 1)
            big = ops.concatenate(bigs, axis=-1 if self.transposed else -2)
        else:
            folded, big = folded[0], bigs[0]
        y = _conv_nd(
            folded,
            big,
            self.kernel_size[1:],
            self.strides[1:],
            self.transposed,
            self.data_format,
            defer_shuffle,
        )
        if defer_shuffle:
            return self._deferred(y, self.strides[1:], out_length, lambda t: self._unfold(t, out_length, filters))
        return self._unfold(y, out_length, filters)

    def lifted_sum(self, inputs, slice_weights, identity: bool = False, add_input: bool = False):
        """``sum_o slice_weights[o] * output[..., o, ...]``: this layer's output
        weighted and summed over the lifted axis, without computing it.

        Summing is linear, so it moves into the kernel: one (rank-1)-D
        convolution of the folded input with ``filters`` outputs instead of
        ``m * filters`` (an SL network's last convolution, when only the
        selected slices' sum is wanted). ``identity=True`` computes it for the
        identity map instead of the convolution, ``add_input=True`` for the
        convolution plus its input (a residual unit with one sub-unit; stride
        1): the shortcut joins the kernel's centre tap. Both need ``filters``
        input channels. The result has the layer's layout with the lifted
        axis removed. Plain (non-transposed, full-length) inputs only.

        Example:
        >>> import numpy as np
        >>> conv = Convolution(rank=3, filters=2, lifted_axis_last=True)
        >>> x = np.random.rand(1, 8, 8, 4, 3).astype("float32")
        >>> w = np.array([1.0, 0.0, 1.0, 1.0], "float32")
        >>> full = keras.ops.convert_to_numpy(conv(x))
        >>> fast = keras.ops.convert_to_numpy(conv.lifted_sum(x, w))
        >>> bool(np.allclose(fast, (full * w[:, None]).sum(axis=3), atol=1e-5))
        True
        """
        if self.rank < 2 or self.transposed or self.lifted_pattern is not None \
                or self.input_patterns is not None:
            raise ValueError(
                f"{self.name}: lifted_sum needs a (non-transposed) convolution of rank >= 2 on a "
                "full-length input (no lifted_pattern/input_patterns)."
            )
        if not self.built:
            self.build(inputs.shape)
        length = int(self.lifted_length)
        dtype = inputs.dtype
        if (identity or add_input) and self.in_channels != self.filters:
            raise ValueError(f"{self.name}: adding the identity needs {self.filters} input channels.")
        if add_input and any(st != 1 for st in self.strides):
            raise ValueError(f"{self.name}: add_input needs stride 1, got {self.strides}.")
        if identity:
            kernel_size, strides, pads = (1,) * self.rank, (1,) * self.rank, (0,) * self.rank
            kernel = ops.reshape(ops.eye(self.filters, dtype=dtype), (1,) * self.rank + (self.filters,) * 2)
        else:
            kernel_size, strides, pads = self.kernel_size, self.strides, self.pads
            # x + conv(x): the identity at the centre tap
            kernel = self._with_identity(dtype) if add_input else ops.cast(self.kernel, dtype)
        out_length = (length + 2 * pads[0] - kernel_size[0]) // strides[0] + 1
        band = _band(length, out_length, kernel_size[0], strides[0], pads[0], False)
        taps = ops.einsum("kio,o->ki", ops.cast(band, dtype), ops.cast(slice_weights, dtype))
        plane = "hw"[: self.rank - 1]
        order = "iab" if self.data_format == "channels_last" else "aib"
        folded_kernel = ops.reshape(
            ops.einsum(f"ki,k{plane}ab->{plane}{order}", taps, kernel),
            (*kernel_size[1:], length * self.in_channels, self.filters),
        )
        folded = self._fold(inputs, length, self.in_channels)
        if all(st == 1 for st in strides[1:]) and self.filters * math.prod(kernel_size[1:]) <= MAX_TAP_OUTPUTS:
            y = _conv_by_taps(folded, folded_kernel, kernel_size[1:], self.data_format)
        else:
            y = _conv_nd(folded, folded_kernel, kernel_size[1:], strides[1:], False, self.data_format)
        if self.use_bias and not identity:
            y = self._plus_bias(y, ops.cast(self.bias, dtype) * ops.sum(ops.cast(slice_weights, dtype)))
        return y

    def get_config(self):
        config = super().get_config()
        config.update(
            rank=self.rank,
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            transposed=self.transposed,
            use_bias=self.use_bias,
            data_format=self.data_format,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            strategy=self.strategy,
            lifted_axis_last=self.lifted_axis_last,
            broadcast_input=self.broadcast_input,
            lifted_pattern=None if self.lifted_pattern is None else list(self.lifted_pattern),
            input_patterns=patterns_config(self.input_patterns),
        )
        return config

    def logical_shape(self, shape, output: bool = True) -> tuple:
        """``shape`` with a compact lifted axis restored to its logical length."""
        shape = list(shape)
        pattern = self.output_pattern if output else self.lifted_pattern
        if pattern is not None:
            shape[self._lifted_position] = len(pattern)
        return tuple(shape)

    def macs(self, input_shape, output_shape) -> int:
        """Multiply-accumulates, counted as thop does (per output element) on
        the logical (full-length) tensors, compact or not."""
        out = [d for i, d in enumerate(self.logical_shape(output_shape)) if i != 0]
        return int(math.prod(out)) * self.in_channels * math.prod(self.kernel_size)
