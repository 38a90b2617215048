"""Grouped and depthwise convolutions on TensorFlow (op ``"conv"``).

Keras' TensorFlow backend compiles every grouped convolution with XLA, whose
CPU kernels are slow for them (JAX's too, for depthwise 3-D ones) (measured here, 3x3 kernels, float32):
depthwise 2-D on (4, 128, 128, 32) 83.6 ms grouped vs 0.86 ms with
TensorFlow's depthwise kernel; depthwise 3-D on (2, 16, 64, 64, 16) 608 ms
grouped vs 24.5 ms as one convolution per group.
"""

from __future__ import annotations

from keras import ops

from keras_sl.fast.dispatch import channels_last_conv, register
from keras_sl.layers.convolution import conv, pad_spatial, torch_padding


def _applies_depthwise(x, kernel, strides, dilation, groups, data_format) -> bool:
    rank = len(strides)
    return (rank <= 2 and groups > 1 and kernel.shape[-2] == 1 and len(set(strides)) == 1
            and (strides[0] == 1 or all(d == 1 for d in dilation)))


@register("conv", "tensorflow_depthwise", backends=("tensorflow",), devices=("cpu",), applies=_applies_depthwise,
          summary="groups == in_channels, rank 1-2: TensorFlow's depthwise kernel instead of Keras' "
                  "XLA-compiled grouped convolution (3x3 on (4, 128, 128, 32): 83.6 -> 0.86 ms on CPU).")
@channels_last_conv
def tensorflow_depthwise(x, kernel, strides, dilation, groups, data_format):
    rank = len(strides)
    channels = x.shape[-1]
    # (*k, 1, channels * multiplier) -> (*k, channels, multiplier): output c * m + j reads channel c.
    kernel = ops.reshape(kernel, (*kernel.shape[:rank], channels, kernel.shape[-1] // channels))
    if strides[0] == 1:
        return ops.depthwise_conv(x, kernel, strides=1, padding="same", dilation_rate=dilation)
    x = pad_spatial(x, torch_padding(kernel.shape[:rank], dilation), "channels_last")
    return ops.depthwise_conv(x, kernel, strides=strides, padding="valid")


def _applies_depthwise_3d(x, kernel, strides, dilation, groups, data_format) -> bool:
    return (len(strides) == 3 and groups > 1 and kernel.shape[-2] == 1 and kernel.shape[-1] == groups
            and all(s == 1 for s in strides) and kernel.shape[0] is not None)


@register("conv", "depthwise_3d_by_planes", backends=("tensorflow", "jax"), devices=("cpu",),
          applies=_applies_depthwise_3d,
          summary="Depthwise 3-D convolutions (stride 1, multiplier 1: the SL decoders' multi-scale blocks) as "
                  "one 2-D depthwise convolution of all planes per tap of the first axis, summed (5x5x5 on "
                  "(4, 8, 64, 64, 32): TF 221 -> 50 ms vs one conv per group, JAX 15.6 -> 1.7 s; torch's own "
                  "grouped Conv3d is faster, 48 ms).")
@channels_last_conv
def depthwise_3d_by_planes(x, kernel, strides, dilation, groups, data_format):
    kd, kh, kw = kernel.shape[:3]
    channels = kernel.shape[-1]
    pad = dilation[0] * (kd - 1) // 2
    shape = ops.shape(x)
    depth = shape[1]
    padded = ops.pad(x, [(0, 0), (pad, pad), (0, 0), (0, 0), (0, 0)]) if pad else x
    out = None
    for t in range(kd):
        start = t * dilation[0]
        # ops.slice, not x[:, a:b]: TensorFlow's gradient of a strided slice is 3x slower here than a pad.
        window = ops.slice(padded, (0, start, 0, 0, 0), (shape[0], depth, shape[2], shape[3], channels))
        planes = ops.reshape(window if kd > 1 else padded, (-1, shape[2], shape[3], channels))
        tap = ops.reshape(kernel[t], (kh, kw, channels, 1))
        y = ops.depthwise_conv(planes, tap, strides=1, padding="same", dilation_rate=dilation[1:])
        out = y if out is None else out + y
    return ops.reshape(out, (shape[0], depth, shape[2], shape[3], channels))


@register("conv", "tensorflow_groups_split", backends=("tensorflow",), devices=("cpu",),
          applies=lambda x, kernel, strides, dilation, groups, data_format: groups > 1,
          summary="Other grouped convolutions on TensorFlow's CPU: one convolution per group, concatenated "
                  "(depthwise 3x3x3 on (2, 16, 64, 64, 16): 608 -> 24.5 ms).")
def tensorflow_groups_split(x, kernel, strides, dilation, groups, data_format):
    axis = -1 if data_format == "channels_last" else 1
    parts = zip(ops.split(x, groups, axis=axis), ops.split(kernel, groups, axis=-1))
    return ops.concatenate([conv(xg, kg, strides, dilation, 1, data_format) for xg, kg in parts], axis=axis)
