"""Structure loss: weighted BCE + weighted IoU (PraNet / paper Table V)."""

from __future__ import annotations

import keras
from keras import ops


def box_mean(x, kernel: int):
    """Mean over a ``kernel``-wide cube around each element, zero padding
    included in the count (PyTorch's ``avg_pool(..., padding=k//2)``).

    Computed with running sums (cost independent of ``kernel``), axis by
    axis, for channels_last ``(B, *spatial, C)`` tensors.
    """
    if kernel % 2 != 1:
        raise ValueError(f"kernel must be odd, got {kernel}.")
    rank = len(x.shape) - 2
    pad = kernel // 2
    for axis in range(1, rank + 1):
        widths = [(0, 0)] * (rank + 2)
        widths[axis] = (pad + 1, pad)
        c = ops.cumsum(ops.pad(x, widths), axis=axis)
        n = c.shape[axis]
        hi = [slice(None)] * (rank + 2)
        lo = [slice(None)] * (rank + 2)
        hi[axis] = slice(kernel, n)
        lo[axis] = slice(0, n - kernel)
        x = c[tuple(hi)] - c[tuple(lo)]
    return x / float(kernel**rank)


def boundary_weights(mask, kernel: int = 31, strength: float = 5.0):
    """``1 + strength * |avgpool_k(mask) - mask|`` for ``(B, *spatial, C)`` masks.

    The pooling counts zero padding in the average (PyTorch's
    ``avg_pool2d(..., padding=k//2)`` default), so borders get extra weight
    exactly as in the reference implementation.
    """
    return 1.0 + strength * ops.abs(box_mean(mask, kernel) - mask)


@keras.saving.register_keras_serializable(package="keras_sl")
class StructureLoss(keras.losses.Loss):
    """Weighted BCE-with-logits + weighted IoU, per image, then batch mean.

    With ``w = 1 + 5 * |avgpool_31(mask) - mask|``:
    ``wbce = sum(w * bce(logits, mask)) / sum(w)`` and
    ``wiou = 1 - (sum(w * p * mask) + 1) / (sum(w * (p + mask)) - sum(w * p * mask) + 1)``
    over each image's pixels, ``p = sigmoid(logits)``. This is the intended
    weighted form; the widely copied reference code passes ``reduce='none'``
    to ``binary_cross_entropy_with_logits``, which silently gives a plain
    mean BCE. Channels are averaged. Inputs are channels_last
    ``(B, *spatial, C)``; ``y_pred`` are logits.

    Example:
    >>> import numpy as np
    >>> y = np.zeros((1, 32, 32, 1), "float32"); y[:, 8:24, 8:24] = 1
    >>> float(StructureLoss()(y, 20 * (2 * y - 1))) < 0.01
    True
    """

    def __init__(self, kernel_size: int = 31, strength: float = 5.0, name="structure_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.kernel_size = int(kernel_size)
        self.strength = float(strength)

    def call(self, y_true, y_pred):
        return self._per_image(y_true, y_pred, slice_axes=0)

    def slice_values(self, y_true, y_pred):
        """Loss of every slice ``y_pred[:, i]`` against the one target ``y_true``.

        ``y_true`` is ``(B, *spatial, C)``, ``y_pred`` ``(B, m, *spatial, C)``;
        returns ``(B, m)``. Equal to calling the loss on each slice, but the
        boundary weights and the target's sums are computed once per target
        instead of once per slice (what :class:`SliceSupervision` uses).
        """
        return self._per_image(y_true, y_pred, slice_axes=1)

    def _per_image(self, y_true, y_pred, slice_axes: int):
        y_true = ops.cast(y_true, y_pred.dtype)
        target_axes = tuple(range(1, len(y_true.shape) - 1))
        w = boundary_weights(y_true, self.kernel_size, self.strength)
        wy = w * y_true
        sum_w, sum_wy = ops.sum(w, axis=target_axes), ops.sum(wy, axis=target_axes)
        for _ in range(slice_axes):  # broadcast the target over the slices
            y_true, w, wy = (ops.expand_dims(t, 1) for t in (y_true, w, wy))
            sum_w, sum_wy = ops.expand_dims(sum_w, 1), ops.expand_dims(sum_wy, 1)
        axes = tuple(range(1 + slice_axes, len(y_pred.shape) - 1))
        # Element-wise BCE with logits; softplus is overflow-free and its
        # gradient, sigmoid, is right at 0 too (relu/abs forms give -y there).
        bce = ops.softplus(y_pred) - y_pred * y_true
        wbce = ops.sum(w * bce, axis=axes) / sum_w
        p = ops.sigmoid(y_pred)
        inter = ops.sum(p * wy, axis=axes)
        union = ops.sum(p * w, axis=axes) + sum_wy
        wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
        return ops.mean(wbce + wiou, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, strength=self.strength)
        return config
