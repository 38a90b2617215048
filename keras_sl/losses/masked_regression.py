"""Masked regression losses for depth estimation (invalid pixels excluded)."""

from __future__ import annotations

import keras
from keras import ops


class _MaskedRegression(keras.losses.Loss):
    def __init__(self, invalid_value: float = 0.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.invalid_value = float(invalid_value)

    def _error(self, diff):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        valid = ops.logical_and(ops.isfinite(y_true), ops.not_equal(y_true, self.invalid_value))
        safe_true = ops.where(valid, y_true, ops.zeros_like(y_true))
        weight = ops.cast(valid, y_pred.dtype)
        err = self._error(y_pred - safe_true) * weight
        axes = tuple(range(1, len(y_pred.shape)))
        count = ops.sum(weight, axis=axes)
        # Images without a single valid pixel contribute 0.
        return ops.sum(err, axis=axes) / ops.maximum(count, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(invalid_value=self.invalid_value)
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class MaskedMSE(_MaskedRegression):
    """Mean squared error over valid depth pixels of each image.

    Pixels whose target equals ``invalid_value`` (0 for most depth sensors)
    or is not finite are excluded from both sum and count.

    Example:
    >>> import numpy as np
    >>> y = np.array([[[[2.0], [0.0]]]], "float32")  # second pixel invalid
    >>> float(MaskedMSE()(y, np.array([[[[3.0], [9.0]]]], "float32")))
    1.0
    """

    def __init__(self, invalid_value: float = 0.0, name="masked_mse", **kwargs):
        super().__init__(invalid_value=invalid_value, name=name, **kwargs)

    def _error(self, diff):
        return ops.square(diff)


@keras.saving.register_keras_serializable(package="keras_sl")
class MaskedL1(_MaskedRegression):
    """Mean absolute error over valid depth pixels of each image.

    Example:
    >>> import numpy as np
    >>> y = np.array([[[[2.0], [0.0]]]], "float32")
    >>> float(MaskedL1()(y, np.array([[[[3.5], [9.0]]]], "float32")))
    1.5
    """

    def __init__(self, invalid_value: float = 0.0, name="masked_l1", **kwargs):
        super().__init__(invalid_value=invalid_value, name=name, **kwargs)

    def _error(self, diff):
        return ops.abs(diff)


@keras.saving.register_keras_serializable(package="keras_sl")
class MaskedDepthLoss(keras.losses.Loss):
    """``MaskedMSE + MaskedL1`` (paper Table V, depth estimation)."""

    def __init__(self, invalid_value: float = 0.0, name="masked_depth_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.invalid_value = float(invalid_value)
        self._mse = MaskedMSE(invalid_value, reduction=None)
        self._l1 = MaskedL1(invalid_value, reduction=None)

    def call(self, y_true, y_pred):
        return self._mse.call(y_true, y_pred) + self._l1.call(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config.update(invalid_value=self.invalid_value)
        return config
