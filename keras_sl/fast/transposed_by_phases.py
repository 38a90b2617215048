"""Transposed convolutions as one stride-1 convolution plus a pixel shuffle
(XLA on CPU runs input-dilated convolutions and their kernel gradients 7-12x
slower than ordinary ones).

Ops: ``"conv_transpose"`` (path ``phases``) and ``"convolution_deferred"``
(path ``shuffle_after_norm``: the shuffle waits until a following norm and
activation ran on the phase layout, then happens once, fused with them).
"""

from __future__ import annotations

import itertools
import math

from keras import ops

from keras_sl.fast import banded_convolution
from keras_sl.fast.dispatch import register
from keras_sl.layers.convolution import keras_conv


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


def phase_convolution(x, kernel, strides, data_format: str):
    """The transposed convolution's output in phase layout: channels
    (phase..., filter), one position per input position (before
    :func:`pixel_shuffle`). A 3x3, stride-2 kernel becomes a 2x2 one with 4x
    the filters."""
    rank = len(strides)
    kernel_size = tuple(kernel.shape[:rank])
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
    # Output channels ordered (phase..., filter) in both data formats; the shuffle knows the order.
    big = ops.concatenate([phase_kernel(0, kernel, c) for c in choices], axis=-1)
    first = 1 if data_format == "channels_last" else 2
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
    return keras_conv(xp, big, strides=(1,) * rank, padding=padding, dilation=(1,) * rank, data_format=data_format)


def pixel_shuffle(y, strides, data_format: str):
    """Phase layout -> the transposed convolution's output: channels
    (phase..., filter) become ``strides`` times more positions per axis."""
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


def _applies_phases(x, kernel, strides, dilation, groups, data_format) -> bool:
    return groups == 1 and all(d == 1 for d in dilation)


@register("conv_transpose", "phases", backends=("jax",), devices=("cpu",), applies=_applies_phases,
          summary="One stride-1 convolution with prod(strides)x the filters plus a pixel shuffle: XLA's CPU "
                  "input-dilated convolutions and their gradients were 7-12x slower.")
def phases(x, kernel, strides, dilation, groups, data_format):
    return pixel_shuffle(phase_convolution(x, kernel, strides, data_format), strides, data_format)


def _applies_deferred(layer, inputs) -> bool:
    return (layer.transposed and layer.data_format == "channels_last" and layer.groups == 1
            and all(d == 1 for d in layer.dilation) and layer.output_pattern is None)


@register("convolution_deferred", "shuffle_after_norm", backends=("jax",), devices=("cpu",),
          applies=_applies_deferred,
          summary="The norm and PReLU after a phase-decomposed transposed convolution run on the phase "
                  "layout; the shuffle follows, fused with them (element-wise kernel time of a JAX SL-UNet "
                  "5L/1Res inference 22-24 -> 18-19 ms).")
def shuffle_after_norm(layer, inputs):
    """``(values, finish)``: ``values`` is the phase-layout output viewed as
    ``(B, ..., filters)``; ``finish`` shuffles (and unfolds) it."""
    if banded_convolution.folds(layer):
        folded, big, out_length = banded_convolution.fold_inputs(layer, inputs, layer.kernel, layer.filters)
        strides = layer.strides[1:]
        y = phase_convolution(folded, big, strides, layer.data_format)

        def unfold(t):
            return banded_convolution.unfold(layer, t, out_length, layer.filters)
    else:
        x = layer.expanded(inputs)
        strides, out_length = layer.physical(layer.strides), 1
        y = phase_convolution(x, layer.physical_kernel(layer.kernel, x.dtype), strides, layer.data_format)

        def unfold(t):
            return t
    shape = ops.shape(y)
    view = ops.reshape(y, (-1, *shape[1:-1], math.prod(strides) * out_length, layer.filters))

    def finish(values):
        return unfold(pixel_shuffle(ops.reshape(values, (-1, *shape[1:-1], shape[-1])), strides, layer.data_format))

    return view, finish
