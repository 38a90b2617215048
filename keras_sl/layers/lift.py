"""Spatial lifting: replicate a k-D input m times along a new spatial axis."""

from __future__ import annotations

import keras
from keras import ops

from keras_sl.utils.layout import standardize_data_format


@keras.saving.register_keras_serializable(package="keras_sl")
class Lift(keras.layers.Layer):
    """Lift ``(B, *spatial, C)`` to ``(B, depth, *spatial, C)`` (paper eq. 1).

    With ``data_format="channels_first"`` the mapping is
    ``(B, C, *spatial) -> (B, C, depth, *spatial)``. The new (lifted) axis is
    the first spatial axis, or the last one with ``lifted_axis_last=True``
    (``(B, *spatial, depth, C)``, the layout in which SL backbones fold the
    lifted axis into channels for free).

    ``compact=True`` stores the lifted tensor compactly
    (:mod:`keras_sl.layers.lifted_structure`): its one distinct slice, size 1
    along the lifted axis, for backbones that take such an input
    (``UNet(compact_input=True)``); no m-fold copy is ever made.

    Example:
    >>> import numpy as np
    >>> tuple(Lift(depth=16)(np.zeros((2, 64, 64, 3), "float32")).shape)
    (2, 16, 64, 64, 3)
    """

    def __init__(
        self,
        depth: int = 16,
        data_format: str | None = None,
        lifted_axis_last: bool = False,
        compact: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.compact = bool(compact)
        self.lifted_axis_last = bool(lifted_axis_last)
        if int(depth) < 1:
            raise ValueError(f"Lift depth must be >= 1, got {depth}.")
        self.depth = int(depth)
        self.data_format = standardize_data_format(data_format)

    @property
    def lifted_axis(self) -> int:
        """Axis of the output that holds the lifted (new) dimension."""
        if self.lifted_axis_last:
            return -2 if self.data_format == "channels_last" else -1
        return 1 if self.data_format == "channels_last" else 2

    def call(self, inputs):
        x = ops.expand_dims(inputs, self.lifted_axis)
        if self.compact:
            return x
        shape = list(ops.shape(x))
        shape[self.lifted_axis] = self.depth
        # A broadcast, not a copy, where the backend can (torch: a view).
        return ops.broadcast_to(x, shape)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        axis = self.lifted_axis % (len(shape) + 1)
        shape.insert(axis, 1 if self.compact else self.depth)
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            depth=self.depth,
            data_format=self.data_format,
            lifted_axis_last=self.lifted_axis_last,
            compact=self.compact,
        )
        return config
