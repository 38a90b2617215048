"""Dice and IoU for binary and multi-class segmentation."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_sl.utils.layout import standardize_data_format


def _hard_maps(y_true, y_pred, num_classes: int, threshold: float, from_logits: bool):
    """Binary maps ``(B, P, K')`` for target and prediction (channels_last)."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    if num_classes == 1:
        cut = float(np.log(threshold / (1 - threshold))) if from_logits else threshold
        pred = ops.cast(y_pred > cut, "float32")
        true = ops.cast(y_true >= 0.5, "float32")
    else:
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), num_classes)[..., 1:]
        if y_true.shape[-1] == num_classes:  # one-hot target
            true = ops.cast(y_true, "float32")[..., 1:]
        else:  # integer labels, trailing axis of size 1 or none
            labels = y_true[..., 0] if y_true.shape[-1] == 1 else y_true
            true = ops.one_hot(ops.cast(labels, "int32"), num_classes)[..., 1:]
    b = ops.shape(pred)[0]
    return (
        ops.reshape(true, (b, -1, true.shape[-1])),
        ops.reshape(pred, (b, -1, pred.shape[-1])),
    )


def _overlap(y_true, y_pred, num_classes, threshold, from_logits, kind):
    true, pred = _hard_maps(y_true, y_pred, num_classes, threshold, from_logits)
    inter = ops.sum(true * pred, axis=1)
    size_t = ops.sum(true, axis=1)
    size_p = ops.sum(pred, axis=1)
    if kind == "dice":
        num, den = 2.0 * inter, size_t + size_p
    else:
        num, den = inter, size_t + size_p - inter
    # Both empty: perfect agreement.
    score = ops.where(den > 0, num / ops.maximum(den, 1e-12), ops.ones_like(den))
    return ops.mean(score, axis=-1)


def dice_per_image(y_true, y_pred, num_classes: int = 1, threshold: float = 0.5, from_logits: bool = False):
    """Hard Dice of each image (channels_last), averaged over foreground classes.

    Example:
    >>> import numpy as np
    >>> y = np.zeros((2, 4, 4, 1)); y[0, :2] = 1
    >>> dice_per_image(y, y).tolist()
    [1.0, 1.0]
    """
    return np.asarray(ops.convert_to_numpy(_overlap(y_true, y_pred, num_classes, threshold, from_logits, "dice")))


def iou_per_image(y_true, y_pred, num_classes: int = 1, threshold: float = 0.5, from_logits: bool = False):
    """Hard IoU (Jaccard) of each image, averaged over foreground classes."""
    return np.asarray(ops.convert_to_numpy(_overlap(y_true, y_pred, num_classes, threshold, from_logits, "iou")))


class _PerImageOverlap(keras.metrics.Metric):
    kind = "dice"

    def __init__(
        self,
        num_classes: int = 1,
        threshold: float = 0.5,
        from_logits: bool = False,
        from_slices: bool = False,
        data_format: str | None = None,
        name=None,
        dtype=None,
    ):
        super().__init__(name=name or self.kind, dtype=dtype)
        self.num_classes = int(num_classes)
        self.threshold = float(threshold)
        self.from_logits = bool(from_logits)
        self.from_slices = bool(from_slices)
        self.data_format = standardize_data_format(data_format)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        if self.data_format == "channels_first":
            y_true = ops.moveaxis(y_true, 1, -1)
            y_pred = ops.moveaxis(y_pred, 1, -1)
        if self.from_slices:
            # Training monitor for SL models: mean logit over all slices.
            y_pred = ops.mean(y_pred, axis=1)
        scores = _overlap(y_true, y_pred, self.num_classes, self.threshold, self.from_logits, self.kind)
        if sample_weight is not None:
            w = ops.reshape(ops.cast(sample_weight, scores.dtype), (-1,))
            self.total.assign_add(ops.sum(scores * w))
            self.count.assign_add(ops.sum(w))
        else:
            self.total.assign_add(ops.sum(scores))
            self.count.assign_add(ops.cast(ops.shape(scores)[0], "float32"))

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "threshold": self.threshold,
            "from_logits": self.from_logits,
            "from_slices": self.from_slices,
            "data_format": self.data_format,
            "name": self.name,
            "dtype": self.dtype,
        }


@keras.saving.register_keras_serializable(package="keras_sl")
class Dice(_PerImageOverlap):
    """Mean per-image hard Dice (binary: threshold; multi-class: argmax).

    ``from_slices=True`` accepts SL slice logits ``(B, m, ...)`` and scores the
    mean logit over all slices (a training-time monitor; the exact eq. 9
    prediction needs the selected slices: use ``model.predict``).

    Example:
    >>> import numpy as np
    >>> m = Dice()
    >>> y = np.zeros((1, 4, 4, 1), "float32"); y[:, :2] = 1
    >>> m.update_state(y, y); float(m.result())
    1.0
    """

    kind = "dice"


@keras.saving.register_keras_serializable(package="keras_sl")
class IoU(_PerImageOverlap):
    """Mean per-image hard IoU; same arguments as :class:`Dice`."""

    kind = "iou"
