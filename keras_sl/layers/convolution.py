"""Rank-generic convolution with PyTorch/MONAI padding semantics."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_sl.utils.layout import normalize_tuple, standardize_data_format

# PyTorch's default for nn.ConvNd / nn.ConvTransposeNd (kaiming_uniform, a=sqrt(5)),
# so that a keras_sl UNet starts training from the same distribution as MONAI's.
TORCH_DEFAULT_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}


def _tf_cpu_only() -> bool:
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


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

    # -- helpers -----------------------------------------------------------
    @property
    def _channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    @property
    def _first_spatial(self) -> int:
        return 1 if self.data_format == "channels_last" else 2

    def build(self, input_shape):
        in_channels = input_shape[self._channel_axis]
        if in_channels is None:
            raise ValueError(
                "The channel dimension of the input must be known to build "
                f"{self.name}; got input shape {input_shape}."
            )
        self.in_channels = int(in_channels)
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

    def _output_length(self, length, axis):
        if length is None:
            return None
        k, s, p = self.kernel_size[axis], self.strides[axis], self.pads[axis]
        if self.transposed:
            return (length - 1) * s + k - 2 * p + (s - 1)
        return (length + 2 * p - k) // s + 1

    def compute_output_shape(self, input_shape):
        input_shape = list(input_shape)
        first = self._first_spatial
        for i in range(self.rank):
            input_shape[first + i] = self._output_length(input_shape[first + i], i)
        input_shape[self._channel_axis] = self.filters
        return tuple(input_shape)

    # -- forward -----------------------------------------------------------
    def _native(self, fn, x, **kwargs):
        """Run a conv op in the layout the backend executes natively.

        Keras' TensorFlow backend silently routes channels_first 3-D
        convolutions through XLA on CPU, which is 30-100x slower than the
        native kernel; we transpose to channels_last around the op instead.
        """
        if (
            self.data_format == "channels_first"
            and keras.backend.backend() == "tensorflow"
            and _tf_cpu_only()
        ):
            perm = (0, *range(2, self.rank + 2), 1)
            inv = (0, self.rank + 1, *range(1, self.rank + 1))
            y = fn(ops.transpose(x, perm), data_format="channels_last", **kwargs)
            return ops.transpose(y, inv)
        return fn(x, data_format=self.data_format, **kwargs)

    def _pad_spatial(self, x):
        pad = [(0, 0)] * (self.rank + 2)
        for i, p in enumerate(self.pads):
            pad[self._first_spatial + i] = (p, p)
        return ops.pad(x, pad)

    def _crop_transposed(self, y):
        """Crop Keras' "valid" transposed output to PyTorch's alignment.

        Keras returns ``L*s + max(k-s, 0)`` elements per axis; PyTorch with
        ``padding=p=(k-1)//2, output_padding=s-1`` keeps ``L*s`` of them
        starting at ``p``, zeros (then the bias) past the end.
        """
        slices = [slice(None)] * (self.rank + 2)
        widths = [(0, 0)] * (self.rank + 2)
        for i in range(self.rank):
            axis = self._first_spatial + i
            p, s, k = self.pads[i], self.strides[i], self.kernel_size[i]
            behind = max(k - s, 0) - p  # >0: crop behind; <0: zeros to append
            slices[axis] = slice(p, -behind if behind > 0 else None)
            widths[axis] = (0, max(0, -behind))
        y = y[tuple(slices)]
        if any(w[1] for w in widths):
            y = ops.pad(y, widths)
        return y

    def call(self, inputs):
        if self.transposed:
            y = self._native(
                lambda t, data_format: ops.conv_transpose(
                    t,
                    self.kernel,
                    strides=self.strides,
                    padding="valid",
                    data_format=data_format,
                ),
                inputs,
            )
            y = self._crop_transposed(y)
        else:
            x = inputs
            if all(s == 1 for s in self.strides):
                padding = "same"  # identical to symmetric padding for odd k
            else:
                padding = "valid"
                if any(self.pads):
                    x = self._pad_spatial(x)
            y = self._native(
                lambda t, data_format: ops.conv(
                    t,
                    self.kernel,
                    strides=self.strides,
                    padding=padding,
                    data_format=data_format,
                ),
                x,
            )
        if self.use_bias:
            if self.data_format == "channels_last":
                y = y + self.bias
            else:
                y = y + ops.reshape(self.bias, (1, self.filters) + (1,) * self.rank)
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
        )
        return config

    def macs(self, input_shape, output_shape) -> int:
        """Multiply-accumulates, counted as thop does (per output element)."""
        out = [d for i, d in enumerate(output_shape) if i != 0]
        return int(math.prod(out)) * self.in_channels * math.prod(self.kernel_size)
