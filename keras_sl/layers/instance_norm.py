"""Instance normalisation without affine parameters (MONAI ``Norm.INSTANCE``), keras.ops reference.

Fused, compiled or re-laid-out statistics live in :mod:`keras_sl.fast`
(ops ``"instance_norm"``, ``"standardize"``, ``"moments"``, ``"scale"``).
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_sl.fast import dispatch
from keras_sl.layers.prelu import prelu
from keras_sl.utils.layout import spatial_axes, standardize_data_format


def moments(x, axes: Sequence[int]):
    """Mean and biased variance of ``x`` over ``axes`` (kept); op ``"moments"``."""
    return dispatch.run("moments", _moments, x, tuple(axes))


def _moments(x, axes):
    return ops.moments(x, axes=list(axes), keepdims=True)


def scale(x, mean, var, epsilon: float):
    """``(x - mean) / sqrt(var + epsilon)``; op ``"scale"``."""
    return dispatch.run("scale", _scale, x, mean, var, epsilon)


def _scale(x, mean, var, epsilon):
    return (x - mean) * ops.rsqrt(var + epsilon)


def standardize(x, axes: Sequence[int], epsilon: float, shift=None, training: bool = False):
    """``x + shift`` normalised over ``axes``; op ``"standardize"``.

    ``shift`` (broadcasting to ``x``, one value per channel) moves the mean
    by itself and leaves the variance, so it is never added to ``x`` (a
    full pass); it stays in the graph with a zero gradient, so optimizers
    see a convolution bias handed over this way.
    """
    return dispatch.run("standardize", _standardize, x, tuple(axes), epsilon, shift, training)


def _standardize(x, axes, epsilon, shift, training):
    mean, var = moments(x, axes)
    if shift is not None:
        mean = (mean + shift) - shift
    return scale(x, mean, var, epsilon)


@keras.saving.register_keras_serializable(package="keras_sl")
class InstanceNorm(keras.layers.Layer):
    """Normalise each channel of each sample over its spatial axes.

    Matches ``torch.nn.InstanceNormNd(affine=False, track_running_stats=False)``:
    biased variance, ``epsilon=1e-5``, the same computation in training and
    inference.

    With ``lifted_counts`` the input is compact along ``lifted_axis``
    (:mod:`keras_sl.layers.lifted_structure`): stored slice ``j`` stands for
    ``lifted_counts[j]`` equal slices, and the statistics are those of the
    full tensor.

    Example:
    >>> import numpy as np
    >>> import keras
    >>> y = keras.ops.convert_to_numpy(InstanceNorm()(np.random.rand(2, 8, 8, 3).astype("float32")))
    >>> y.shape, bool(abs(y.mean()) < 1e-5), bool(abs(y.std() - 1) < 1e-3)
    ((2, 8, 8, 3), True, True)
    """

    def __init__(
        self,
        epsilon: float = 1e-5,
        data_format: str | None = None,
        lifted_counts: Sequence[int] | None = None,
        lifted_axis: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.data_format = standardize_data_format(data_format)
        self.lifted_counts = None if lifted_counts is None else tuple(int(c) for c in lifted_counts)
        self.lifted_axis = None if lifted_axis is None else int(lifted_axis)
        if (self.lifted_counts is None) != (self.lifted_axis is None):
            raise ValueError("Give both lifted_counts and lifted_axis, or neither.")

    def call(self, inputs, shift=None, training=None, prelu_alpha=None, residual=None):
        """Normalise ``inputs + shift`` (``shift``: a per-channel vector, see
        :func:`standardize`: a convolution's bias need not be added before
        the norm). ``prelu_alpha`` then applies a one-slope PReLU
        (``keras_sl.layers.PReLU``) and ``residual`` (a tensor of the
        output's shape) is added: fast paths fuse the three (op
        ``"instance_norm"``).
        """
        return dispatch.run("instance_norm", InstanceNorm.normalize, self, inputs, shift, prelu_alpha, residual,
                            bool(training))

    def normalize(self, inputs, shift, prelu_alpha, residual, training: bool):
        """The reference of :meth:`call`."""
        rank = len(inputs.shape) - 2
        axes = spatial_axes(rank, self.data_format)
        x = inputs
        if x.dtype in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")  # statistics in float32 under mixed precision
        if shift is not None:
            channels_last = self.data_format == "channels_last"
            shift = ops.reshape(ops.cast(shift, x.dtype), (1,) * (rank + 1) + (-1,) if channels_last
                                else (1, -1) + (1,) * rank)
        if self.lifted_counts is None:
            y = standardize(x, axes, self.epsilon, shift, training)
        else:
            mean, var = self.compact_moments(x, axes)
            if shift is not None:
                mean = (mean + shift) - shift
            y = scale(x, mean, var, self.epsilon)
        if prelu_alpha is not None:
            y = prelu(y, ops.reshape(ops.cast(prelu_alpha, y.dtype), (1,) * len(y.shape)))
        y = ops.cast(y, inputs.dtype)
        return y if residual is None else y + residual

    def compact_moments(self, x, axes):
        """Moments of the logical tensor from its compact form: stored slice
        ``j`` stands for ``lifted_counts[j]`` equal slices (law of total
        variance over the slices, so no cancellation)."""
        lifted = self.lifted_axis % len(x.shape)
        slice_mean, slice_var = moments(x, [a for a in axes if a != lifted])
        shape = [1] * len(x.shape)
        shape[lifted] = len(self.lifted_counts)
        weights = np.asarray(self.lifted_counts, "float32").reshape(shape) / sum(self.lifted_counts)
        weights = ops.cast(weights, x.dtype)
        mean = ops.sum(weights * slice_mean, axis=lifted, keepdims=True)
        var = ops.sum(weights * (slice_var + ops.square(slice_mean - mean)), axis=lifted, keepdims=True)
        return mean, var

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            epsilon=self.epsilon,
            data_format=self.data_format,
            lifted_counts=None if self.lifted_counts is None else list(self.lifted_counts),
            lifted_axis=self.lifted_axis,
        )
        return config

    def macs(self, input_shape, output_shape) -> int:
        """thop's count for a norm layer without affine: 2 per element of the
        logical tensor (compact lifted axes count all their slices)."""
        shape = list(input_shape)
        if self.lifted_counts is not None:
            shape[self.lifted_axis] = sum(self.lifted_counts)
        return 2 * int(math.prod(shape[1:]))
