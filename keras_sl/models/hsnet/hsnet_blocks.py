"""Small rank-generic layers of HSNet's decoder and heads (keras.ops only).

HSNet (Zhang et al., 2022) gates features with an ECA-style channel gate and
with products of maps; these layers hold those steps so the decoder stays a
plain functional graph whose MACs :mod:`keras_sl.profiler` counts the thop way
(``macs`` methods below). Every layer accepts maps of any spatial rank in
either data format.
"""

from __future__ import annotations

import math
from typing import Mapping

import keras
from keras import ops

from keras_sl.layers.initializers import HostInitializer
from keras_sl.layers.torch_weights import assign_from_state, torch_conv_kernel, torch_linear_kernel
from keras_sl.utils.layout import standardize_data_format


def _channels_last(x, data_format: str):
    return x if data_format == "channels_last" else ops.moveaxis(x, 1, -1)


def _spatial_shape(shape, data_format: str) -> tuple:
    return tuple(shape[1:-1]) if data_format == "channels_last" else tuple(shape[2:])


def _channels(shape, data_format: str):
    return shape[-1] if data_format == "channels_last" else shape[1]


def TorchDefaultUniform(seed: int | None = None) -> HostInitializer:
    """PyTorch's default ``nn.Linear`` / ``nn.ConvNd`` weight init, drawn on the host."""
    return HostInitializer(kind="torch_default", seed=seed)


@keras.saving.register_keras_serializable(package="keras_sl")
class ChannelHalves(keras.layers.Layer):
    """``torch.split(x, C // 2, dim=channels)`` for an even ``C``: ``x -> [first, second]``.

    Args:
        data_format: where the channels are.

    Example:
    >>> import numpy as np
    >>> first, second = ChannelHalves()(np.zeros((1, 4, 4, 6), "float32"))
    >>> tuple(first.shape), tuple(second.shape)
    ((1, 4, 4, 3), (1, 4, 4, 3))
    """

    def __init__(self, data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format)

    def _half(self, shape) -> int:
        channels = _channels(shape, self.data_format)
        if channels is None or channels % 2:
            raise ValueError(f"{self.name}: needs an even, known channel count, got input shape {tuple(shape)}.")
        return channels // 2

    def call(self, inputs):
        half = self._half(inputs.shape)
        if self.data_format == "channels_last":
            return [inputs[..., :half], inputs[..., half:]]
        return [inputs[:, :half], inputs[:, half:]]

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[-1 if self.data_format == "channels_last" else 1] = self._half(input_shape)
        return [tuple(shape), tuple(shape)]

    def get_config(self):
        config = super().get_config()
        config.update(data_format=self.data_format)
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class ChannelGate(keras.layers.Layer):
    """HSNet's ``Linear_Eca_block`` applied to a target: ``[source, target] -> target * g``.

    ``g = sigmoid(conv1d(mean(source)))``: the source's global average over
    every spatial axis, convolved *across channels* by a 1-channel
    ``Conv1d(kernel_size, padding=kernel_size // 2, bias=False)``, then a
    sigmoid, broadcast over the target's positions. HSNet computes the gate
    of one tensor and applies it to another (``HybridAttention``); pass the
    same tensor twice for a plain ECA.

    Weight: ``kernel`` ``(kernel_size, 1, 1)``; :meth:`load_torch_state` reads
    ``{prefix}conv1d.weight`` ``(1, 1, kernel_size)``.

    Args:
        kernel_size: the odd channel-convolution length (HSNet: 5).
        data_format: where the channels are.

    Example:
    >>> import numpy as np
    >>> x = np.ones((1, 4, 4, 8), "float32")
    >>> tuple(ChannelGate()([x, x]).shape)
    (1, 4, 4, 8)
    """

    def __init__(self, kernel_size: int = 5, data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}.")
        self.data_format = standardize_data_format(data_format)

    def build(self, input_shape):
        source, target = input_shape
        if _channels(source, self.data_format) != _channels(target, self.data_format):
            raise ValueError(f"{self.name}: source and target need the same channels, got {input_shape}.")
        self.kernel = self.add_weight(name="kernel", shape=(self.kernel_size, 1, 1), initializer=TorchDefaultUniform())

    def call(self, inputs):
        source, target = inputs
        x = _channels_last(source, self.data_format)
        rank = len(x.shape)
        pooled = ops.mean(x, axis=tuple(range(1, rank - 1)))  # (B, C)
        gate = ops.conv(pooled[..., None], ops.cast(self.kernel, x.dtype), padding="same", data_format="channels_last")
        gate = ops.sigmoid(gate[..., 0])
        ones = [1] * (rank - 2)
        shape = [-1, *ones, x.shape[-1]] if self.data_format == "channels_last" else [-1, x.shape[-1], *ones]
        return target * ops.reshape(gate, shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, data_format=self.data_format)
        return config

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy ``{prefix}conv1d.weight``; returns the keys used."""
        used: set[str] = set()
        assign_from_state(self.kernel, state, prefix + "conv1d.weight", used, torch_conv_kernel)
        return used

    def macs(self, input_shape, output_shape) -> int:
        """thop's count of the source's ``AdaptiveAvgPool(1)`` (``(positions + 1)``
        per pooled value) and of the ``Conv1d`` (``kernel_size`` per channel)."""
        channels = int(_channels(input_shape, self.data_format))
        positions = math.prod(int(s) for s in _spatial_shape(input_shape, self.data_format))
        return (positions + 1) * channels + self.kernel_size * channels


@keras.saving.register_keras_serializable(package="keras_sl")
class ScrambledQueryProduct(keras.layers.Layer):
    """HSNet's ``atten = q_map * k_map``, with ``k_map`` rebuilt from ``q_map``.

    ``HybridSenmentic`` makes ``q_map`` (``B, C, *spatial``, contiguous) from
    the attention query, then ``k_map = q_map.reshape(B, *spatial, C)`` moved
    to channels-first: the channel-major buffer read as channel-last, not the
    attention keys. This layer reproduces that memory reinterpretation exactly
    (for the query map in either data format) and returns the product.

    Args:
        data_format: layout of the query map.

    Example:
    >>> import numpy as np
    >>> q = np.arange(8, dtype="float32").reshape(1, 2, 2, 2)  # channels_last
    >>> keras.ops.convert_to_numpy(ScrambledQueryProduct()(q))[0, :, :, 0]
    array([[ 0.,  8.],
           [ 4., 30.]], dtype=float32)
    """

    def __init__(self, data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format)

    def call(self, q):
        shape = ops.shape(q)
        if self.data_format == "channels_last":  # (B, *S, C): buffer of (B, C, *S) read as (B, *S, C)
            k = ops.reshape(ops.moveaxis(q, -1, 1), shape)
        else:  # (B, C, *S): its buffer read as (B, *S, C), moved to channels-first
            k = ops.moveaxis(ops.reshape(q, (shape[0], *shape[2:], shape[1])), -1, 1)
        return q * k

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(data_format=self.data_format)
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class GlobalAveragePool(keras.layers.Layer):
    """``AdaptiveAvgPoolNd(1)`` flattened: ``(B, *spatial, C) -> (B, C)`` over every spatial axis.

    Counted as thop counts the module: ``positions + 1`` per output value.

    Args:
        data_format: where the channels are.

    Example:
    >>> import numpy as np
    >>> tuple(GlobalAveragePool()(np.ones((2, 3, 4, 5), "float32")).shape)
    (2, 5)
    """

    def __init__(self, data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format)

    def call(self, inputs):
        x = _channels_last(inputs, self.data_format)
        return ops.mean(x, axis=tuple(range(1, len(x.shape) - 1)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], _channels(input_shape, self.data_format))

    def get_config(self):
        config = super().get_config()
        config.update(data_format=self.data_format)
        return config

    def macs(self, input_shape, output_shape) -> int:
        """thop's ``AdaptiveAvgPool`` count: ``(positions + 1) x channels``."""
        positions = math.prod(int(s) for s in _spatial_shape(input_shape, self.data_format))
        return (positions + 1) * int(_channels(input_shape, self.data_format))


@keras.saving.register_keras_serializable(package="keras_sl")
class Linear(keras.layers.Dense):
    """``torch.nn.Linear``: a ``Dense`` layer counted as thop counts ``Linear``
    (``in_features x output elements``) that loads PyTorch weights.

    Example:
    >>> import numpy as np
    >>> tuple(Linear(4)(np.zeros((2, 3), "float32")).shape)
    (2, 4)
    """

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy ``{prefix}weight`` (transposed) and ``{prefix}bias``; returns the keys used."""
        used: set[str] = set()
        assign_from_state(self.kernel, state, prefix + "weight", used, torch_linear_kernel)
        if self.use_bias:
            assign_from_state(self.bias, state, prefix + "bias", used)
        return used

    def macs(self, input_shape, output_shape) -> int:
        return int(input_shape[-1]) * math.prod(int(d) for d in output_shape[1:])


@keras.saving.register_keras_serializable(package="keras_sl")
class CoefficientScale(keras.layers.Layer):
    """``[logits, coeff] -> logits * coeff[:, index]`` (HSNet's per-stage gating).

    Args:
        index: which coefficient scales the logits.

    Example:
    >>> import numpy as np
    >>> y = CoefficientScale(1)([np.ones((2, 3, 3, 1), "float32"), np.array([[1, 2], [3, 4]], "float32")])
    >>> keras.ops.convert_to_numpy(y)[:, 0, 0, 0]
    array([2., 4.], dtype=float32)
    """

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, inputs):
        logits, coeff = inputs
        scale = coeff[:, self.index]
        return logits * ops.reshape(ops.cast(scale, logits.dtype), [-1] + [1] * (len(logits.shape) - 1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(index=self.index)
        return config
