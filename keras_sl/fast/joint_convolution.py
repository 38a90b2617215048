"""Convolutions of one input as one convolution with their kernels
concatenated along the filters (op ``"joint_convolution"``,
:meth:`keras_sl.layers.Convolution.call_jointly`): the input is read (and,
on the banded path, folded) once and the matrix products are wider.

Only XLA on CPU gains (a strided residual unit's first convolution and its
residual path; SL-UNet 5L/1Res inference at 256², batch 4: 44.4 -> 43.1 ms on
JAX, train step unchanged). torch's inference graph slowed 41 -> 53 ms (the
split outputs are strided views) and TensorFlow did not change beyond noise
(same-process alternating A/B), so it is registered for JAX on CPU.
"""

from __future__ import annotations

import itertools

from keras import ops

from keras_sl.fast.dispatch import register


def _applies(convs, inputs, add_bias) -> bool:
    return all(conv.groups == 1 for conv in convs)


@register("joint_convolution", "concatenated_kernels", backends=("jax",), devices=("cpu",), applies=_applies,
          summary="A strided residual unit's first convolution and its residual path as one convolution: "
                  "JAX SL-UNet 5L/1Res inference 44.4 -> 43.1 ms (torch 41 -> 53 ms, TF unchanged).")
def concatenated_kernels(convs, inputs, add_bias):
    first = convs[0]
    dtype = inputs.dtype
    kernel = ops.concatenate([ops.cast(conv.kernel, dtype) for conv in convs], axis=-1)
    filters = [conv.filters for conv in convs]
    y = first.convolve(inputs, kernel=kernel, filters=sum(filters))
    outputs = ops.split(y, list(itertools.accumulate(filters[:-1])), axis=first.channel_axis)
    return [conv.plus_bias(out, conv.bias) if conv.use_bias and add else out
            for conv, out, add in zip(convs, outputs, add_bias)]
