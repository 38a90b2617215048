"""Instance normalisation without affine parameters (MONAI ``Norm.INSTANCE``)."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_sl.utils.layout import spatial_axes, standardize_data_format


@keras.saving.register_keras_serializable(package="keras_sl")
class InstanceNorm(keras.layers.Layer):
    """Normalise each channel of each sample over its spatial axes.

    Matches ``torch.nn.InstanceNormNd(affine=False, track_running_stats=False)``:
    biased variance, ``epsilon=1e-5``, the same computation in training and
    inference.

    Example:
    >>> import numpy as np
    >>> import keras
    >>> y = keras.ops.convert_to_numpy(InstanceNorm()(np.random.rand(2, 8, 8, 3).astype("float32")))
    >>> y.shape, bool(abs(y.mean()) < 1e-5), bool(abs(y.std() - 1) < 1e-3)
    ((2, 8, 8, 3), True, True)
    """

    def __init__(self, epsilon: float = 1e-5, data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.data_format = standardize_data_format(data_format)

    def call(self, inputs):
        rank = len(inputs.shape) - 2
        axes = spatial_axes(rank, self.data_format)
        x = inputs
        if x.dtype in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")  # statistics in float32 under mixed precision
        mean, var = ops.moments(x, axes=axes, keepdims=True)
        y = (x - mean) * ops.rsqrt(var + self.epsilon)
        return ops.cast(y, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, data_format=self.data_format)
        return config

    def macs(self, input_shape, output_shape) -> int:
        """thop's count for a norm layer without affine: 2 per element."""
        return 2 * int(math.prod(input_shape[1:]))
