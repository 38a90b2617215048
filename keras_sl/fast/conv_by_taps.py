"""Stride-1 convolutions with few outputs as one matrix product plus a
shifted sum of the taps (path ``conv_by_taps`` of op ``"conv"``).

Convolutions with few output channels run far below peak in every backend's
kernel (16 -> 1 channels, 3x3, batch 4 at 256^2: TF 3.1 ms, JAX 4.9, torch
15 ms); as one matmul to (tap, filter) channels and a sum of shifted slices
they are dense and memory-bound (TF 2.0, JAX 1.4, torch 4.0 ms). Never chosen
on its own: :mod:`keras_sl.fast.lifted_sum` asks for it (``prefer``).
"""

from __future__ import annotations

import itertools
import math

from keras import ops

from keras_sl.fast import dispatch
from keras_sl.fast.dispatch import channels_last_conv, register
from keras_sl.layers.convolution import keras_conv

# Up to this many (filters x taps) outputs.
MAX_TAP_OUTPUTS = 32


def pointwise(x, matrix):
    """``x @ matrix`` over the channels of a channels-last ``x``; op ``"pointwise"``."""
    return dispatch.run("pointwise", lambda t, m: ops.tensordot(t, m, axes=1), x, matrix)


@register("pointwise", "torch_1x1_conv", backends=("torch",),
          summary="torch's CPU matmul is slow for a (B*H*W, C) x (C, taps*F) product; a 1x1 convolution on "
                  "the channels_last view is not.")
def torch_1x1_conv(x, matrix):
    rank = len(x.shape) - 2
    kernel = ops.reshape(matrix, (1,) * rank + tuple(matrix.shape))
    return keras_conv(x, kernel, strides=(1,) * rank, padding="valid", dilation=(1,) * rank,
                      data_format="channels_last")


def _applies(x, kernel, strides, dilation, groups, data_format) -> bool:
    rank = len(strides)
    taps = math.prod(kernel.shape[:rank])
    return (all(s == 1 for s in strides) and all(d == 1 for d in dilation) and groups == 1
            and taps * kernel.shape[-1] <= MAX_TAP_OUTPUTS)


@register("conv", "conv_by_taps", applies=_applies, pays=lambda *args: False,
          summary="A stride-1 convolution with few outputs as one matmul to (tap, filter) channels plus a "
                  "shifted sum (16->1 channels, 3x3, batch 4, 256^2: TF 3.1 -> 2.0 ms, JAX 4.9 -> 1.4, "
                  "torch 15 -> 4.0 ms); taken only where a caller asks (lifted sums).")
@channels_last_conv
def conv_by_taps(x, kernel, strides, dilation, groups, data_format):
    rank = len(strides)
    kernel_size = tuple(kernel.shape[:rank])
    in_channels, filters = kernel.shape[-2], kernel.shape[-1]
    taps = math.prod(kernel_size)
    # (*k, in, out) -> (in, *k, out) -> (in, taps * out)
    z = pointwise(x, ops.reshape(ops.moveaxis(kernel, -2, 0), (in_channels, taps * filters)))
    plane = ops.shape(x)[1 : rank + 1]
    pads = [(k - 1) // 2 for k in kernel_size]
    z = ops.pad(z, [(0, 0)] + [(p, k - 1 - p) for p, k in zip(pads, kernel_size)] + [(0, 0)])
    total = None
    for t, offsets in enumerate(itertools.product(*[range(k) for k in kernel_size])):
        index = (slice(None), *[slice(o, o + n) for o, n in zip(offsets, plane)],
                 slice(t * filters, (t + 1) * filters))
        total = z[index] if total is None else total + z[index]
    return total
