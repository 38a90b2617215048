"""Structure loss: weighted BCE + weighted IoU (PraNet / paper Table V)."""

from __future__ import annotations

import keras
from keras import ops

from keras_sl.fast import dispatch


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
    ``(B, *spatial, C)``; ``y_pred`` are logits. ``wiou`` is evaluated as
    ``m / (m + inter + 1)`` with ``m = sum(w * (p + y - 2 p y))``, the same
    value without the cancellation that the formula above suffers for
    near-perfect predictions.

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
        rank = len(y_true.shape) - 2
        w = boundary_weights(y_true, self.kernel_size, self.strength)
        sums = dispatch.run("pixel_sums", PixelSums, rank, slice_axes)
        y_true, w, y_pred = sums.layout(y_true), sums.layout(w), sums.layout(y_pred)
        wy = w * y_true
        sum_w = sums.of_target(w)
        if slice_axes:  # the target's terms broadcast over the slices
            y_true = ops.expand_dims(y_true, sums.slice_axis)
            w, wy = sums.weights_over_slices(w), sums.weights_over_slices(wy)
        bce = _bce_with_logits(y_pred, y_true)
        p = ops.sigmoid(y_pred)
        wbce = sums(bce, w) / sum_w
        inter = sums(p, wy)
        # 1 - (inter + 1) / (union - inter + 1) == mismatch / (mismatch + inter + 1)
        # with mismatch = union - 2 inter = sum(w (p + y - 2 p y)): a sum of
        # non-negative terms, free of the cancellation that costs a
        # near-perfect slice most of its float32 digits.
        mismatch = sums(y_true + p * (1.0 - 2.0 * y_true), w)  # the factor is target-sized
        wiou = mismatch / (mismatch + inter + 1.0)
        return ops.mean(wbce + wiou, axis=sums.channel_axis)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, strength=self.strength)
        return config


def _bce_with_logits(logits, target):
    """Element-wise BCE with logits; ``target`` broadcasts to ``logits``; op ``"bce_with_logits"``.

    ``softplus(x) - x * y`` is overflow-free and its gradient, sigmoid, is
    right at 0 too (the relu/abs forms give ``-y`` there)."""
    return dispatch.run("bce_with_logits", lambda x, y: ops.softplus(x) - x * y, logits, target)


class PixelSums:
    """Per-image (and per-slice), per-channel sums of ``values * weights``
    over the spatial axes of channels-last tensors (op ``"pixel_sums"``
    builds one). ``weights`` have no slice axis until
    :meth:`weights_over_slices`."""

    channel_axis, slice_axis = -1, 1

    def __init__(self, rank: int, slice_axes: int):
        self.rank, self.slice_axes = rank, slice_axes

    def layout(self, x):
        """``x`` (channels last) in the layout the sums read."""
        return x

    def of_target(self, x):
        """Sum of a target-shaped tensor, shaped to broadcast against slice sums."""
        first = 1 if self.channel_axis == -1 else 2
        total = ops.sum(x, axis=tuple(range(first, first + self.rank)))
        return ops.expand_dims(total, self.slice_axis) if self.slice_axes else total

    def weights_over_slices(self, x):
        """Weights for slice values: with a slice axis."""
        return ops.expand_dims(x, self.slice_axis)

    def __call__(self, values, weights):
        first = 1 + self.slice_axes
        return ops.sum(values * weights, axis=tuple(range(first, first + self.rank)))
