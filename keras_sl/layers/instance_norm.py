"""Instance normalisation without affine parameters (MONAI ``Norm.INSTANCE``)."""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_sl.utils.layout import spatial_axes, standardize_data_format


def _moments(x, axis: int):
    """Mean and biased variance along ``axis`` (kept).

    JAX: ``E[x^2] - E[x]^2``, which XLA fuses into one pass over ``x`` (the
    two-pass form is 2-3x slower there on CPU); as in Keras' torch backend,
    float32 and clamped at 0. Elsewhere: ``keras.ops.moments``.
    """
    if keras.backend.backend() == "jax":
        mean = ops.mean(x, axis=axis, keepdims=True)
        var = ops.mean(ops.square(x), axis=axis, keepdims=True) - ops.square(mean)
        return mean, ops.maximum(var, 0.0)
    return ops.moments(x, axes=[axis], keepdims=True)


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

    def call(self, inputs, shift=None, training=None):
        """Normalise ``inputs + shift`` (``shift``: a per-channel vector).

        The statistics absorb a per-channel shift exactly, so a convolution's
        bias need not be added before the norm (a full pass over the
        tensor): pass it as ``shift``. The output does not depend on it, but
        it stays in the training graph (zero gradient) so that optimizers see
        the weight.
        """
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
            return ops.cast(y, inputs.dtype)
        shape = None
        if self.lifted_counts is None:
            # (B, N, C): one reduction axis; XLA's CPU reductions over several
            # non-minor axes are 2-10x slower (benchmarks/README.md).
            shape = ops.shape(x)
            x = ops.reshape(x, (shape[0], -1, shape[-1]))
            mean, var = _moments(x, axis=1)
            if shift is not None:
                shift = ops.reshape(shift, (1, 1, -1))
        else:
            mean, var = self._compact_moments(x, axes)
        if shift is not None:  # (x + shift) - mean(x + shift), shift never added to x
            mean = (mean + shift) - shift
        y = (x - mean) * ops.rsqrt(var + self.epsilon)
        if shape is not None:
            y = ops.reshape(y, shape)
        return ops.cast(y, inputs.dtype)

    def _compact_moments(self, x, axes):
        """Moments of the logical tensor from its compact form: stored slice
        ``j`` stands for ``lifted_counts[j]`` equal slices (law of total
        variance over the slices, so no cancellation)."""
        lifted = self.lifted_axis % len(x.shape)
        plane = [a for a in axes if a != lifted]
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
