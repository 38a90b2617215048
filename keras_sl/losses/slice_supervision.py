"""Dense slice supervision (paper eqs. 3-4)."""

from __future__ import annotations

import keras
from keras import ops

from keras_sl.utils.layout import standardize_data_format


@keras.saving.register_keras_serializable(package="keras_sl")
class SliceSupervision(keras.losses.Loss):
    """Apply a per-image loss to every output slice against the k-D target.

    ``y_pred`` holds slice logits ``(B, m, *spatial, K)`` (channels_last) or
    ``(B, K, m, *spatial)`` (channels_first); ``y_true`` is the k-D target
    ``(B, *spatial, K)``. The wrapped loss sees the m slices as m images, and
    the result is averaged over slices (eq. 4), giving one value per sample.

    Args:
        loss: a Keras loss (object, name or callable) returning per-image values.
        data_format: layout of ``y_pred`` and ``y_true``.

    Example:
    >>> import numpy as np
    >>> from keras_sl.losses import StructureLoss
    >>> loss = SliceSupervision(StructureLoss())
    >>> y = np.ones((2, 8, 8, 1), "float32")
    >>> p = np.full((2, 16, 8, 8, 1), 5.0, "float32")
    >>> tuple(loss.per_slice(y, p).shape)
    (2, 16)
    """

    def __init__(self, loss="structure", data_format: str | None = None, name="slice_supervision", **kwargs):
        super().__init__(name=name, **kwargs)
        self.loss = _get_loss(loss)
        self.data_format = standardize_data_format(data_format)

    def _channels_last(self, y_true, y_pred):
        """Target ``(B, *spatial, K)`` and slices ``(B, m, *spatial, K)``."""
        if len(y_true.shape) != len(y_pred.shape) - 1:
            raise ValueError(
                "SliceSupervision expects slice logits with one more axis than the "
                f"target; got y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)}. "
                "Use it with an SL model (e.g. keras_sl.SLUNet), or use the plain loss "
                "for k-D models."
            )
        if self.data_format == "channels_first":
            nd = len(y_pred.shape)
            y_pred = ops.moveaxis(y_pred, 2, 1)  # (B, m, K, *spatial)
            y_pred = ops.transpose(y_pred, (0, 1, *range(3, nd), 2))
            y_true = ops.transpose(y_true, (0, *range(2, nd - 1), 1))
        return ops.cast(y_true, y_pred.dtype), y_pred

    def per_slice(self, y_true, y_pred):
        """Per-sample, per-slice losses ``(B, m)`` (the terms of eq. 6).

        A loss with a ``slice_values(y_true, y_pred)`` method (``StructureLoss``,
        ``DiceLoss``) gets the slices and the one target as they are, so what
        depends on the target alone is computed once, not m times; any other
        loss sees the m slices as m images with the target repeated.
        """
        y_true, y_pred = self._channels_last(ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred))
        if hasattr(self.loss, "slice_values"):
            dtype = getattr(self.loss, "dtype", None) or y_pred.dtype  # as Loss.__call__ casts
            return self.loss.slice_values(ops.cast(y_true, dtype), ops.cast(y_pred, dtype))
        depth = y_pred.shape[1]
        y_true = ops.repeat(ops.expand_dims(y_true, 1), depth, axis=1)
        flat_pred = ops.reshape(y_pred, (-1, *y_pred.shape[2:]))
        flat_true = ops.reshape(y_true, (-1, *y_true.shape[2:]))
        values = self.loss(flat_true, flat_pred)
        # Reduce any remaining non-batch axes to one value per image.
        if len(values.shape) > 1:
            values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
        return ops.reshape(values, (-1, depth))

    def call(self, y_true, y_pred):
        return ops.mean(self.per_slice(y_true, y_pred), axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            loss=keras.losses.serialize(self.loss) if isinstance(self.loss, keras.losses.Loss) else self.loss,
            data_format=self.data_format,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)


def _get_loss(loss):
    """Resolve a loss and make it return unreduced, per-image values."""
    from keras_sl.losses import get as get_sl_loss

    if isinstance(loss, str):
        loss = get_sl_loss(loss)
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        config["reduction"] = None
        return loss.__class__.from_config(config)
    if callable(loss):
        return loss
    raise ValueError(f"Could not interpret loss {loss!r}.")
