"""A weighted sum over the lifted axis moved into the kernel (op
``"lifted_sum"`` of :meth:`keras_sl.layers.Convolution.lifted_sum`).

An SL network's prediction needs only the sum of the selected slices'
logits; summing is linear, so it moves into the last convolution: one
(rank-1)-D convolution of the folded input with ``filters`` outputs instead
of ``m * filters`` (run by :mod:`keras_sl.fast.conv_by_taps` when that is
few), the shortcut of ``x + conv(x)`` joined to the kernel's centre tap.
The head alone: TensorFlow 6.0 -> 2.4 ms, JAX 12.4 -> 1.3 ms, torch 13 ->
3.3 ms (SL-UNet 5L/1Res, 256², batch 4).
"""

from __future__ import annotations

from keras import ops

from keras_sl.fast.banded_convolution import band, fold
from keras_sl.fast.dispatch import register
from keras_sl.layers.convolution import conv


def _applies(layer, inputs, slice_weights, identity, add_input) -> bool:
    return layer.groups == 1 and all(d == 1 for d in layer.dilation)


@register("lifted_sum", "summed_kernel", applies=_applies,
          summary="The weighted sum over the lifted axis moved into the kernel: one (rank-1)-D convolution "
                  "with filters outputs instead of m * filters (the SL-UNet head alone: TF 6.0 -> 2.4 ms, "
                  "JAX 12.4 -> 1.3 ms, torch 13 -> 3.3 ms).")
def summed_kernel(layer, inputs, slice_weights, identity: bool, add_input: bool):
    rank, length, dtype = layer.rank, int(layer.lifted_length), inputs.dtype
    if identity:
        kernel_size, strides, pads = (1,) * rank, (1,) * rank, (0,) * rank
        kernel = ops.reshape(ops.eye(layer.filters, dtype=dtype), (1,) * rank + (layer.filters,) * 2)
    else:
        kernel_size, strides, pads = layer.kernel_size, layer.strides, layer.pads
        kernel = layer.kernel_with_identity(dtype) if add_input else ops.cast(layer.kernel, dtype)
    out_length = (length + 2 * pads[0] - kernel_size[0]) // strides[0] + 1
    taps = ops.einsum("kio,o->ki", ops.cast(band(length, out_length, kernel_size[0], strides[0], pads[0], False),
                                            dtype), ops.cast(slice_weights, dtype))
    plane = "hw"[: rank - 1]
    order = "iab" if layer.data_format == "channels_last" else "aib"
    folded_kernel = ops.reshape(ops.einsum(f"ki,k{plane}ab->{plane}{order}", taps, kernel),
                                (*kernel_size[1:], length * layer.in_channels, layer.filters))
    folded = fold(layer, inputs, length, layer.in_channels)
    y = conv(folded, folded_kernel, strides[1:], (1,) * (rank - 1), 1, layer.data_format, prefer="conv_by_taps")
    if layer.use_bias and not identity:
        y = layer.plus_bias(y, ops.cast(layer.bias, dtype) * ops.sum(ops.cast(slice_weights, dtype)))
    return y
