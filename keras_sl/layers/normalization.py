"""Batch and layer normalisation with PyTorch's semantics and defaults.

Keras' own layers differ from ``torch.nn`` in ways that break ported weights:
``epsilon`` 1e-3 instead of 1e-5, and ``BatchNormalization`` updates its moving
variance with the biased batch variance where ``BatchNorm2d`` uses the unbiased
one. Both layers here compute their statistics in two passes (mean, then the
mean of squared deviations) and in float32 under mixed precision.
"""

from __future__ import annotations

import math
from typing import Mapping

import keras
from keras import ops

from keras_sl.layers.torch_weights import assign_from_state
from keras_sl.utils.layout import standardize_data_format


def _channel_axis(rank: int, data_format: str) -> int:
    return rank - 1 if data_format == "channels_last" else 1


def _broadcast_shape(rank: int, axis: int) -> list[int]:
    shape = [1] * rank
    shape[axis] = -1
    return shape


def _build_affine(layer, input_shape) -> int:
    """Check ``input_shape``, add ``gamma`` / ``beta`` (float32, never autocast:
    the norms compute in float32) when ``layer.affine``; return the channels."""
    rank = len(input_shape)
    channels = input_shape[_channel_axis(rank, layer.data_format)] if rank >= 2 else None
    if channels is None:
        raise ValueError(
            f"{type(layer).__name__} needs a (batch, ..., channels) input with known channels, got {input_shape}."
        )
    layer.gamma = layer.beta = None
    if layer.affine:
        layer.gamma = layer.add_weight(name="gamma", shape=(channels,), initializer="ones", autocast=False)
        layer.beta = layer.add_weight(name="beta", shape=(channels,), initializer="zeros", autocast=False)
    return channels


@keras.saving.register_keras_serializable(package="keras_sl")
class BatchNorm(keras.layers.Layer):
    """``torch.nn.BatchNorm{1,2,3}d`` for any rank: per-channel batch statistics.

    Training: normalises with the batch mean and biased variance over every
    axis but the channel axis, and updates ``moving_mean`` / ``moving_variance``
    with the batch mean and the *unbiased* variance, as PyTorch does
    (``moving = momentum * moving + (1 - momentum) * batch``). Inference (and a
    layer with ``trainable = False``, as in Keras) uses the moving statistics.
    Output ``x * s + (beta - mean * s)`` with ``s = gamma / sqrt(var + eps)``,
    the form of PyTorch's CPU kernel.

    Args:
        epsilon: added to the variance; PyTorch's default 1e-5.
        momentum: Keras convention, the weight of the old moving value:
            ``0.9`` is PyTorch's ``momentum=0.1``.
        affine: learnable ``gamma`` / ``beta`` (PyTorch's ``affine``).
        data_format: the channel axis is last (``channels_last``) or 1.

    Weights: ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``, each
    ``(C,)``; :meth:`load_torch_state` reads ``weight``, ``bias``,
    ``running_mean``, ``running_var``.

    Example:
    >>> import numpy as np
    >>> bn = BatchNorm()
    >>> x = np.arange(8, dtype="float32").reshape(4, 2)
    >>> keras.ops.convert_to_numpy(bn(x, training=True))[:, 0].round(4)
    array([-1.3416, -0.4472,  0.4472,  1.3416], dtype=float32)
    >>> keras.ops.convert_to_numpy(bn.moving_variance).round(4)  # 0.9 + 0.1 * 20/3
    array([1.5667, 1.5667], dtype=float32)
    """

    def __init__(
        self,
        epsilon: float = 1e-5,
        momentum: float = 0.9,
        affine: bool = True,
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.affine = bool(affine)
        self.data_format = standardize_data_format(data_format)

    def build(self, input_shape):
        channels = _build_affine(self, input_shape)
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=(channels,), initializer="zeros", trainable=False, autocast=False
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=(channels,), initializer="ones", trainable=False, autocast=False
        )

    def call(self, inputs, training=None):
        x = inputs
        if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")
        rank = len(x.shape)
        axis = _channel_axis(rank, self.data_format)
        axes = [a for a in range(rank) if a != axis]
        if training and self.trainable:
            mean = ops.mean(x, axis=axes)
            shape = _broadcast_shape(rank, axis)
            var = ops.mean(ops.square(x - ops.reshape(mean, shape)), axis=axes)
            count = 1
            for a in axes:
                count = count * ops.shape(x)[a]
            count = ops.cast(count, "float32")
            unbiased = var * (count / ops.maximum(count - 1.0, 1.0))
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + ops.cast(mean, "float32") * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + ops.cast(unbiased, "float32") * (1.0 - m))
        else:
            mean = ops.cast(self.moving_mean, x.dtype)
            var = ops.cast(self.moving_variance, x.dtype)
        scale = ops.rsqrt(var + self.epsilon)
        if self.affine:
            scale = scale * ops.cast(self.gamma, x.dtype)
        shift = -mean * scale
        if self.affine:
            shift = shift + ops.cast(self.beta, x.dtype)
        shape = _broadcast_shape(rank, axis)
        y = x * ops.reshape(scale, shape) + ops.reshape(shift, shape)
        return ops.cast(y, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            epsilon=self.epsilon, momentum=self.momentum, affine=self.affine, data_format=self.data_format
        )
        return config

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy ``{prefix}weight/bias/running_mean/running_var`` from a PyTorch
        state dict (``num_batches_tracked`` is skipped, and reported as used when
        present); returns the keys used."""
        used: set[str] = set()
        if self.affine:
            assign_from_state(self.gamma, state, prefix + "weight", used)
            assign_from_state(self.beta, state, prefix + "bias", used)
        assign_from_state(self.moving_mean, state, prefix + "running_mean", used)
        assign_from_state(self.moving_variance, state, prefix + "running_var", used)
        if prefix + "num_batches_tracked" in state:
            used.add(prefix + "num_batches_tracked")
        return used

    def macs(self, input_shape, output_shape) -> int:
        """thop's count: 2 per element, doubled with affine parameters."""
        count = 2 * math.prod(int(d) for d in input_shape[1:])
        return 2 * count if self.affine else count


@keras.saving.register_keras_serializable(package="keras_sl")
class LayerNorm(keras.layers.Layer):
    """``torch.nn.LayerNorm(C)`` over the channel axis of tokens or images.

    Each position is normalised over its ``C`` channels (biased variance),
    then scaled by ``gamma`` and shifted by ``beta``: ``nn.LayerNorm`` on
    tokens ``(B, N, C)`` (``data_format="channels_last"``) or on the channels of
    a ``(B, *spatial, C)`` / ``(B, C, *spatial)`` map of any rank.

    Args:
        epsilon: PyTorch's default 1e-5 (Keras' is 1e-3; PVTv2's blocks use 1e-6).
        affine: learnable ``gamma`` / ``beta`` (PyTorch's ``elementwise_affine``).
        data_format: where the channels are. Tokens are ``channels_last``:
            pass it explicitly when Keras' global format is ``channels_first``.

    Example:
    >>> import numpy as np
    >>> ln = LayerNorm(data_format="channels_last")
    >>> keras.ops.convert_to_numpy(ln(np.array([[[1.0, 2.0, 3.0]]], "float32"))).round(4)
    array([[[-1.2247,  0.    ,  1.2247]]], dtype=float32)
    """

    def __init__(
        self,
        epsilon: float = 1e-5,
        affine: bool = True,
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.affine = bool(affine)
        self.data_format = standardize_data_format(data_format)

    def build(self, input_shape):
        _build_affine(self, input_shape)

    def call(self, inputs):
        x = inputs
        if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")
        rank = len(x.shape)
        axis = _channel_axis(rank, self.data_format)
        centered = x - ops.mean(x, axis=axis, keepdims=True)
        var = ops.mean(ops.square(centered), axis=axis, keepdims=True)
        y = centered * ops.rsqrt(var + self.epsilon)
        if self.affine:
            shape = _broadcast_shape(rank, axis)
            y = y * ops.reshape(ops.cast(self.gamma, x.dtype), shape) + ops.reshape(ops.cast(self.beta, x.dtype), shape)
        return ops.cast(y, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, affine=self.affine, data_format=self.data_format)
        return config

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy ``{prefix}weight`` / ``{prefix}bias`` of an ``nn.LayerNorm``; returns the keys used."""
        used: set[str] = set()
        if self.affine:
            assign_from_state(self.gamma, state, prefix + "weight", used)
            assign_from_state(self.beta, state, prefix + "bias", used)
        return used

    def macs(self, input_shape, output_shape) -> int:
        """thop's count: 2 per element, doubled with affine parameters."""
        count = 2 * math.prod(int(d) for d in input_shape[1:])
        return 2 * count if self.affine else count

