"""Instance normalisation without affine parameters (MONAI ``Norm.INSTANCE``)."""

from __future__ import annotations

import math
import os
from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_sl.layers.elementwise import switched, torch_native_kernels
from keras_sl.layers.prelu import prelu
from keras_sl.utils.device import tf_cpu_only
from keras_sl.utils.layout import spatial_axes, standardize_data_format


def _wide_fold(length: int, channels: int) -> int:
    """How many neighbouring positions to fold into the channels so that a
    reduction over ``length`` runs on rows of >= 128 contiguous values
    (1 when ``length`` is unknown)."""
    fold = 1
    if length is None:
        return fold
    while fold * channels < 128 and length % (2 * fold) == 0:
        fold *= 2
    return fold


def _flat_moments(x):
    """Mean and biased variance over axis 1 of a ``(B, N, C)`` tensor (kept).

    JAX and the XLA-fused TensorFlow path: one pass, ``E[x^2] - E[x]^2`` over
    a ``(B, N / f, f * C)`` view (rows of >= 128 values), then the ``f``
    partial sums added: XLA's CPU reductions over a middle axis with few
    channels are several times slower (a (4, 131072, 8) tensor: 4.0 ms for
    ``keras.ops.moments``, 0.55 ms this way). As in Keras' torch backend,
    float32 and clamped at 0. torch: ``keras.ops.moments`` (its fastest).
    """
    if keras.backend.backend() == "torch":
        return ops.moments(x, axes=[1], keepdims=True)
    batch, channels = ops.shape(x)[0], x.shape[2]
    fold = _wide_fold(x.shape[1], channels)
    wide = ops.reshape(x, (batch, -1, fold * channels)) if fold > 1 else x

    def mean_of(t):
        return ops.mean(ops.reshape(ops.mean(t, axis=1), (batch, fold, channels)), axis=1, keepdims=True)

    mean = mean_of(wide)
    var = mean_of(ops.square(wide)) - ops.square(mean)
    return mean, ops.maximum(var, 0.0)


def _scale_shift(x, mean, var, epsilon: float):
    """``(x - mean) / sqrt(var + epsilon)``; on torch one ``addcmul`` pass
    (``x * r - mean * r``) instead of a subtraction and a multiplication over
    the whole tensor (eager and exported torch graphs run each op as a pass;
    not when traced for inductor, ``keras_sl.layers.elementwise``)."""
    scale = ops.rsqrt(var + epsilon)
    if torch_native_kernels():
        import torch

        return torch.addcmul(-mean * scale, x, scale)
    return (x - mean) * scale


def _tf_xla_fusion() -> bool:
    """Whether TensorFlow compiles the norm (+ PReLU) with XLA: on CPU, where
    TensorFlow runs each elementwise op as its own pass (norm + PReLU of a
    (4, 128, 128, 8, 8) tensor: 7.5 ms as separate ops, 2.7 ms fused).
    ``KERAS_SL_XLA_FUSION=0`` turns it off (exports do)."""
    if keras.backend.backend() != "tensorflow" or not _XLA_FUSION[0]:
        return False
    if os.environ.get("KERAS_SL_XLA_FUSION", "1") == "0":
        return False
    return tf_cpu_only()


_XLA_FUSION = [True]


def xla_fusion(enabled: bool):
    """Turn the XLA-fused norm of the TensorFlow backend on or off while
    models are traced (exporters that cannot read XLA calls turn it off)."""
    return switched(_XLA_FUSION, enabled)


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
        """Normalise ``inputs + shift`` (``shift``: a per-channel vector).

        The statistics absorb a per-channel shift exactly, so a convolution's
        bias need not be added before the norm (a full pass over the
        tensor): pass it as ``shift``. The output does not depend on it, but
        it stays in the training graph (zero gradient) so that optimizers see
        the weight. Two optional steps run in the same fused kernel where the
        backend fuses (XLA: JAX, and TensorFlow on CPU, see
        :func:`xla_fusion`): ``prelu_alpha`` applies a one-slope PReLU
        (``keras_sl.layers.PReLU``) to the result, then ``residual`` (a tensor
        of the output's shape) is added.
        """
        args = (inputs, shift, prelu_alpha, residual, bool(training))
        if _tf_xla_fusion():
            import tensorflow as tf

            # Keras variables become tensors (compiled functions take tensors).
            args = tuple(a if a is None or isinstance(a, bool) else tf.convert_to_tensor(a) for a in args)
            if getattr(self, "_xla_normalize", None) is None:
                normalize = self._normalize  # a closure: tf.function must not trace the layer

                def fused(*args):
                    return normalize(*args)

                self._xla_normalize = tf.function(fused, jit_compile=True, autograph=False)
            return self._xla_normalize(*args)
        return self._normalize(*args)

    def _normalize(self, inputs, shift, prelu_alpha, residual, training: bool):
        rank = len(inputs.shape) - 2
        axes = spatial_axes(rank, self.data_format)
        x = inputs
        if x.dtype in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")  # statistics in float32 under mixed precision
        if shift is not None:
            shape = (1,) * (rank + 1) + (-1,) if self.data_format == "channels_last" else (1, -1) + (1,) * rank
            shift = ops.reshape(ops.cast(shift, x.dtype), shape)
        if self.lifted_counts is None and self.data_format == "channels_first":
            # Normalised axes trailing: one fused kernel where the backend has
            # one (torch's layer_norm); moments and a scale elsewhere.
            if shift is not None and training:
                x = x + shift
            y = ops.layer_normalization(x, axis=list(axes), epsilon=self.epsilon)
        else:
            shape = None
            if self.lifted_counts is None:
                # (B, N, C): one reduction axis; XLA's CPU reductions over
                # several non-minor axes are 2-10x slower (benchmarks/README.md).
                shape = ops.shape(x)
                x = ops.reshape(x, (shape[0], -1, shape[-1]))
                mean, var = _flat_moments(x)
                if shift is not None:
                    shift = ops.reshape(shift, (1, 1, -1))
            else:
                mean, var = self._compact_moments(x, axes)
            if shift is not None:  # (x + shift) - mean(x + shift), shift never added to x
                mean = (mean + shift) - shift
            y = _scale_shift(x, mean, var, self.epsilon)
            if shape is not None:
                y = ops.reshape(y, shape)
        if prelu_alpha is not None:
            y = prelu(y, ops.reshape(ops.cast(prelu_alpha, y.dtype), (1,) * len(y.shape)))
        y = ops.cast(y, inputs.dtype)
        return y if residual is None else y + residual

    def _compact_moments(self, x, axes):
        """Moments of the logical tensor from its compact form: stored slice
        ``j`` stands for ``lifted_counts[j]`` equal slices (law of total
        variance over the slices, so no cancellation)."""
        lifted = self.lifted_axis % len(x.shape)
        plane = [a for a in axes if a != lifted]
        if self.data_format == "channels_last" and lifted == len(x.shape) - 2:
            # (B, *plane, S, C): per-slice statistics as one reduction over a
            # (B, N, S * C) view, like the plain norm.
            shape = ops.shape(x)
            slice_mean, slice_var = _flat_moments(ops.reshape(x, (shape[0], -1, x.shape[-2] * x.shape[-1])))
            stats_shape = (shape[0],) + (1,) * len(plane) + tuple(x.shape[-2:])
            slice_mean = ops.reshape(slice_mean, stats_shape)
            slice_var = ops.reshape(slice_var, stats_shape)
        else:
            slice_mean, slice_var = ops.moments(x, axes=plane, keepdims=True)
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
