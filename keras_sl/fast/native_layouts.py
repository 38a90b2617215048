"""Backend convolutions run in the memory layout their kernels are fastest in
(op ``"keras_conv"``: one ``keras.ops.conv`` / ``conv_transpose`` call).

Both paths transpose around the call and back; the values are the reference's.
"""

from __future__ import annotations

from keras import ops

from keras_sl.fast.dispatch import register
from keras_sl.layers.convolution import keras_conv


def _permuted(x, kernel, data_format: str, to: str, **kwargs):
    """:func:`keras_conv` of ``x`` moved to layout ``to``, the result moved back."""
    rank = len(x.shape) - 2
    first_to_last = (0, *range(2, rank + 2), 1)
    last_to_first = (0, rank + 1, *range(1, rank + 1))
    there, back = (last_to_first, first_to_last) if to == "channels_first" else (first_to_last, last_to_first)
    return ops.transpose(keras_conv(ops.transpose(x, there), kernel, data_format=to, **kwargs), back)


@register(
    "keras_conv", "torch_channels_last_view", backends=("torch",),
    applies=lambda x, kernel, *, data_format, **kwargs: data_format == "channels_last",
    summary="A permuted view of channels-last data is an NCHW tensor in torch's channels_last memory "
            "format, which PyTorch's CPU kernels convolve 3-5x faster than plain NCHW (16->16 channels, "
            "256^2 batch: 18.8 -> 3.4 ms); Keras' own channels_last path copies twice.",
)
def torch_channels_last_view(x, kernel, *, data_format, **kwargs):
    return _permuted(x, kernel, data_format, "channels_first", **kwargs)


@register(
    "keras_conv", "tensorflow_channels_last", backends=("tensorflow",), devices=("cpu",),
    applies=lambda x, kernel, *, data_format, **kwargs: data_format == "channels_first",
    summary="Keras' TensorFlow backend routes channels-first 3-D convolutions through XLA on CPU, "
            "30-100x slower than TensorFlow's native kernel: transpose to channels_last around it.",
)
def tensorflow_channels_last(x, kernel, *, data_format, **kwargs):
    return _permuted(x, kernel, data_format, "channels_last", **kwargs)
