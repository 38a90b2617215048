"""MONAI-style residual unit, rank-generic."""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_sl.blocks.convolution_block import ConvNormAct
from keras_sl.layers.convolution import Convolution
from keras_sl.layers.lifted_structure import canonical, conv_output_pattern, merge_patterns
from keras_sl.utils.layout import normalize_tuple, standardize_data_format


@keras.saving.register_keras_serializable(package="keras_sl")
class ResidualUnit(keras.layers.Layer):
    """``subunits`` ConvNormAct blocks plus a residual path, summed.

    Mirrors ``monai.networks.blocks.ResidualUnit``: only the first sub-unit
    is strided; the residual path is identity when shape is unchanged, a
    strided ``kernel_size`` conv when ``strides != 1``, and a 1x1 conv when
    only the channel count changes. ``last_conv_only`` makes the last
    sub-unit a bare convolution (used at the top of the UNet).
    ``lifted_pattern`` runs the unit on a compact lifted input
    (:mod:`keras_sl.layers.lifted_structure`); where the two paths keep
    different slices apart, both are gathered to their common pattern,
    :attr:`output_pattern`.

    Example:
    >>> import numpy as np
    >>> unit = ResidualUnit(rank=3, filters=8, strides=2)
    >>> tuple(unit(np.zeros((1, 16, 32, 32, 3), "float32")).shape)
    (1, 8, 16, 16, 8)
    """

    def __init__(
        self,
        rank: int,
        filters: int,
        strides=1,
        kernel_size=3,
        subunits: int = 2,
        dropout: float = 0.0,
        last_conv_only: bool = False,
        data_format: str | None = None,
        strategy: str = "auto",
        lifted_axis_last: bool = False,
        broadcast_input: bool = False,
        lifted_pattern: Sequence[int] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.broadcast_input = bool(broadcast_input)
        self.strategy = strategy
        self.lifted_axis_last = bool(lifted_axis_last)
        self.rank = rank
        self.filters = filters
        self.strides = strides
        self.kernel_size = kernel_size
        self.subunits = max(1, int(subunits))
        self.dropout = float(dropout)
        self.last_conv_only = last_conv_only
        self.data_format = standardize_data_format(data_format)
        self.units = []
        pattern = None if lifted_pattern is None else canonical(lifted_pattern)
        self.lifted_pattern = pattern
        for i in range(self.subunits):
            unit = ConvNormAct(
                rank,
                filters,
                kernel_size=kernel_size,
                strides=strides if i == 0 else 1,
                conv_only=last_conv_only and i == self.subunits - 1,
                dropout=dropout,
                data_format=self.data_format,
                strategy=strategy,
                lifted_axis_last=self.lifted_axis_last,
                broadcast_input=self.broadcast_input and i == 0,
                lifted_pattern=pattern,
                name=f"unit{i}",
            )
            self.units.append(unit)
            pattern = unit.output_pattern
        self.residual = None  # decided in build(), once in_channels is known
        self._strided = math.prod(normalize_tuple(self.strides, self.rank, "strides")) != 1
        self._gather_units = self._gather_residual = None
        self.output_pattern = None
        if self.lifted_pattern is not None:
            residual_pattern = self.lifted_pattern
            if self._strided:
                k = normalize_tuple(self.kernel_size, self.rank, "kernel_size")[0]
                s = normalize_tuple(self.strides, self.rank, "strides")[0]
                residual_pattern = conv_output_pattern(self.lifted_pattern, k, s, (k - 1) // 2)[0]
            self.output_pattern, take_units, take_residual = merge_patterns(pattern, residual_pattern)
            # Index arrays built once, not on every call.
            self._gather_units = None if take_units is None else np.asarray(take_units, "int32")
            self._gather_residual = None if take_residual is None else np.asarray(take_residual, "int32")

    def build(self, input_shape):
        ch_axis = -1 if self.data_format == "channels_last" else 1
        in_channels = input_shape[ch_axis]
        shape = input_shape
        for unit in self.units:
            unit.build(shape)
            shape = unit.compute_output_shape(shape)
        strided = self._strided
        if strided or in_channels != self.filters:
            self.residual = Convolution(
                self.rank,
                self.filters,
                kernel_size=self.kernel_size if strided else 1,
                strides=self.strides,
                data_format=self.data_format,
                strategy=self.strategy,
                lifted_axis_last=self.lifted_axis_last,
                broadcast_input=self.broadcast_input,
                lifted_pattern=self.lifted_pattern,
                name="residual",
            )
            self.residual.build(input_shape)

    def call(self, inputs, training=None):
        if self._one_convolution:
            return self.units[0].conv(inputs, add_input=True)
        first = None  # the first sub-unit's convolution, when computed here with the residual path
        if self._strided and self.residual is not None:
            # Same input, kernel size and stride: a fast path may run them as one convolution.
            first, res = self.units[0].conv.call_jointly(inputs, [self.residual], add_bias=(False, True))
        else:
            res = inputs if self.residual is None else self.residual(inputs)
        if self._gather_residual is not None:
            res = ops.take(res, self._gather_residual, axis=self._lifted_axis)
        y = inputs
        for i, unit in enumerate(self.units):
            # The sum happens in the last unit's fused norm pass where the backend
            # fuses (unless the two paths keep different slices: gathered below).
            fused_sum = i == len(self.units) - 1 and self._gather_units is None
            y = unit(y, training=training, conv_output=first if i == 0 else None,
                     residual=res if fused_sum else None)
        if self._gather_units is not None:
            return ops.take(y, self._gather_units, axis=self._lifted_axis) + res
        return y

    @property
    def _one_convolution(self) -> bool:
        """One bare convolution with an identity shortcut on full-length
        slices (the top of a UNet with one residual sub-unit): ``x + conv(x)``
        runs as one convolution (``Convolution.call(add_input=True)``)."""
        return len(self.units) == 1 and self.units[0].conv_only and self.residual is None \
            and self.lifted_pattern is None and not self.units[0].conv.uses_broadcast_input

    @property
    def supports_lifted_sum(self) -> bool:
        """Whether :meth:`lifted_sum` applies: the unit ends linearly (last
        sub-unit a bare convolution) on full-length (not compact) slices."""
        return bool(self.last_conv_only) and self.lifted_pattern is None and self.rank >= 2

    def lifted_sum(self, inputs, slice_weights):
        """The unit's output weighted by ``slice_weights`` and summed over the
        lifted axis (removed), computed through
        :meth:`keras_sl.layers.Convolution.lifted_sum`: the last convolution
        and the residual path are linear, so they produce the sum directly
        (an SL network's selected-slice logit sum, eq. 9, at a fraction of the
        cost of all m slices). Needs :attr:`supports_lifted_sum`.
        """
        if not self.supports_lifted_sum:
            raise ValueError(
                f"{self.name}: lifted_sum needs last_conv_only=True and a full-length input "
                "(no lifted_pattern); call the unit and sum its output instead."
            )
        last = self.units[-1].conv
        if self._one_convolution:  # conv(x) + x: one kernel
            return last.lifted_sum(inputs, slice_weights, add_input=True)
        y = inputs
        for unit in self.units[:-1]:
            y = unit(y)
        out = last.lifted_sum(y, slice_weights)
        if self.residual is None:
            return out + last.lifted_sum(inputs, slice_weights, identity=True)
        return out + self.residual.lifted_sum(inputs, slice_weights)

    @property
    def _lifted_axis(self) -> int:
        return self.units[0].conv.lifted_axis

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for unit in self.units:
            shape = unit.compute_output_shape(shape)
        if self.output_pattern is not None:
            shape = list(shape)
            shape[self._lifted_axis] = len(set(self.output_pattern))
            shape = tuple(shape)
        return shape

    def macs(self, input_shape, output_shape) -> int:
        total, shape = 0, input_shape
        for unit in self.units:
            out = unit.compute_output_shape(shape)
            total += unit.macs(shape, out)
            shape = out
        if self.residual is not None:
            total += self.residual.macs(input_shape, self.residual.compute_output_shape(input_shape))
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            rank=self.rank,
            filters=self.filters,
            strides=self.strides,
            kernel_size=self.kernel_size,
            subunits=self.subunits,
            dropout=self.dropout,
            last_conv_only=self.last_conv_only,
            data_format=self.data_format,
            strategy=self.strategy,
            lifted_axis_last=self.lifted_axis_last,
            broadcast_input=self.broadcast_input,
            lifted_pattern=None if self.lifted_pattern is None else list(self.lifted_pattern),
        )
        return config
