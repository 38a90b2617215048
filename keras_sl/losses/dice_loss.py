"""Soft Dice loss on logits."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sl")
class DiceLoss(keras.losses.Loss):
    """``1 - (2 |p * y| + smooth) / (|p| + |y| + smooth)`` per image.

    ``activation`` turns logits into probabilities: ``"sigmoid"`` (binary or
    multi-label) or ``"softmax"`` (one-hot multi-class targets); ``None`` if
    ``y_pred`` already holds probabilities. Channels are averaged
    (channels_last inputs).

    Example:
    >>> import numpy as np
    >>> y = np.zeros((1, 16, 16, 1), "float32"); y[:, 4:12, 4:12] = 1
    >>> round(float(DiceLoss(activation=None)(y, y)), 6)
    0.0
    """

    def __init__(self, activation: str | None = "sigmoid", smooth: float = 1.0, name="dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if activation not in ("sigmoid", "softmax", None):
            raise ValueError(f"activation must be 'sigmoid', 'softmax' or None, got {activation!r}.")
        self.activation = activation
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        return self._per_image(y_true, y_pred, slice_axes=0)

    def slice_values(self, y_true, y_pred):
        """Loss of every slice ``y_pred[:, i]`` (``(B, m, *spatial, C)``)
        against the one target ``y_true`` (``(B, *spatial, C)``): ``(B, m)``,
        the target's sum computed once (see :class:`SliceSupervision`)."""
        return self._per_image(y_true, y_pred, slice_axes=1)

    def _per_image(self, y_true, y_pred, slice_axes: int):
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.activation == "sigmoid":
            y_pred = ops.sigmoid(y_pred)
        elif self.activation == "softmax":
            y_pred = ops.softmax(y_pred, axis=-1)
        target_sum = ops.sum(y_true, axis=tuple(range(1, len(y_true.shape) - 1)))
        for _ in range(slice_axes):
            y_true, target_sum = ops.expand_dims(y_true, 1), ops.expand_dims(target_sum, 1)
        axes = tuple(range(1 + slice_axes, len(y_pred.shape) - 1))
        inter = ops.sum(y_pred * y_true, axis=axes)
        total = ops.sum(y_pred, axis=axes) + target_sum
        dice = (2.0 * inter + self.smooth) / (total + self.smooth)
        return 1.0 - ops.mean(dice, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(activation=self.activation, smooth=self.smooth)
        return config
