"""Convolution followed by norm, dropout and activation (MONAI ``Convolution``)."""

from __future__ import annotations

import math
from typing import Sequence

import keras

from keras_sl.layers.convolution import Convolution, patterns_config
from keras_sl.layers.instance_norm import InstanceNorm
from keras_sl.layers.lifted_structure import slice_counts
from keras_sl.layers.prelu import PReLU
from keras_sl.utils.layout import standardize_data_format

# thop counts PReLU as one op per element; Table II includes that term.
PRELU_MACS_PER_ELEMENT = 1


def one_parameter_prelu(rank: int, name: str | None = None) -> PReLU:
    """``torch.nn.PReLU()``: a single slope shared by all channels, init 0.25."""
    return PReLU(alpha_initializer=0.25, name=name)


@keras.saving.register_keras_serializable(package="keras_sl")
class ConvNormAct(keras.layers.Layer):
    """Conv (or transposed conv) -> InstanceNorm -> Dropout -> PReLU.

    The "NDA" ordering of ``monai.networks.blocks.Convolution`` with its
    UNet defaults (instance norm without affine, one-parameter PReLU).
    ``conv_only=True`` drops norm, dropout and activation.
    ``lifted_pattern`` runs the block on a compact lifted input
    (:mod:`keras_sl.layers.lifted_structure`); its output is compact in
    :attr:`output_pattern`; ``input_patterns`` makes it take a list of inputs
    read as one channel-concatenated tensor, each compact with its own
    pattern (a skip connection without the concatenation, see
    ``keras_sl.layers.Convolution``). Dropout would make equal slices
    differ, so a compact block has none. ``dilation`` and ``groups`` are
    the convolution's.

    Example:
    >>> import numpy as np
    >>> block = ConvNormAct(rank=2, filters=32, strides=2)
    >>> tuple(block(np.zeros((1, 64, 64, 3), "float32")).shape)
    (1, 32, 32, 32)
    """

    def __init__(
        self,
        rank: int,
        filters: int,
        kernel_size=3,
        strides=1,
        transposed: bool = False,
        conv_only: bool = False,
        dropout: float = 0.0,
        data_format: str | None = None,
        strategy: str = "auto",
        lifted_axis_last: bool = False,
        broadcast_input: bool = False,
        lifted_pattern: Sequence[int] | None = None,
        input_patterns: Sequence[Sequence[int] | None] | None = None,
        dilation=1,
        groups: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (lifted_pattern is not None or input_patterns is not None) and dropout:
            raise ValueError(
                f"dropout={dropout} makes equal lifted slices differ, so the block cannot run "
                "on compact (lifted_pattern/input_patterns) inputs; set dropout=0 or drop them."
            )
        self.broadcast_input = bool(broadcast_input)
        self.strategy = strategy
        self.lifted_axis_last = bool(lifted_axis_last)
        self.rank = rank
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.transposed = transposed
        self.conv_only = conv_only
        self.dropout = float(dropout)
        self.data_format = standardize_data_format(data_format)
        self.conv = Convolution(
            rank,
            filters,
            kernel_size=kernel_size,
            strides=strides,
            transposed=transposed,
            data_format=self.data_format,
            strategy=strategy,
            lifted_axis_last=lifted_axis_last,
            broadcast_input=broadcast_input,
            lifted_pattern=lifted_pattern,
            input_patterns=input_patterns,
            dilation=dilation,
            groups=groups,
            name="conv",
        )
        self.lifted_pattern = self.conv.lifted_pattern
        self.input_patterns = self.conv.input_patterns
        if not conv_only:
            compact = {}
            if self.output_pattern is not None:
                compact = dict(
                    lifted_counts=slice_counts(self.output_pattern),
                    lifted_axis=self.conv.lifted_axis,
                )
            self.norm = InstanceNorm(data_format=self.data_format, name="norm", **compact)
            self.drop = keras.layers.Dropout(self.dropout, name="dropout") if self.dropout else None
            self.act = one_parameter_prelu(rank, name="act")

    @property
    def output_pattern(self) -> tuple[int, ...] | None:
        """Lifted pattern of the output (None when the input is not compact)."""
        return self.conv.output_pattern

    def build(self, input_shape):
        self.conv.build(input_shape)
        out = self.conv.compute_output_shape(input_shape)
        if not self.conv_only:
            self.norm.build(out)
            self.act.build(out)

    def call(self, inputs, training=None, residual=None, conv_output=None):
        """``residual``: a tensor of the output's shape added at the end (in
        the norm's fused pass where the backend fuses). ``conv_output``: the
        convolution of ``inputs`` without its bias, already computed by the
        caller (a residual unit runs it jointly with its residual path,
        ``Convolution.call_jointly``)."""
        if self.conv_only:
            if conv_output is None:
                y = self.conv(inputs)
            else:
                y = self.conv.plus_bias(conv_output, self.conv.bias) if self.conv.use_bias else conv_output
            return y if residual is None else y + residual
        # Instance norm cancels the conv's bias: the norm takes it as a shift
        # of its statistics instead of a pass over the tensor.
        if conv_output is not None:
            y = conv_output
        elif self.drop is None and residual is None and self.norm.lifted_counts is None:
            # A transposed conv's pixel shuffle (where there is one) after the
            # norm and PReLU, fused with them: one pass fewer.
            values, finish = self.conv.call_deferred(inputs)
            if finish is not None:
                return finish(self.norm(values, shift=self.conv.bias, training=training,
                                        prelu_alpha=self.act.alpha))
            y = values
        else:
            y = self.conv(inputs, add_bias=False)
        if self.drop is None:  # norm, PReLU (and residual) in one fused pass
            return self.norm(
                y, shift=self.conv.bias, training=training, prelu_alpha=self.act.alpha, residual=residual
            )
        y = self.norm(y, shift=self.conv.bias, training=training)
        y = self.act(self.drop(y, training=training))
        return y if residual is None else y + residual

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def macs(self, input_shape, output_shape) -> int:
        output_shape = self.conv.logical_shape(output_shape)
        total = self.conv.macs(input_shape, output_shape)
        if not self.conv_only:
            total += self.norm.macs(output_shape, output_shape)
            total += PRELU_MACS_PER_ELEMENT * int(math.prod(output_shape[1:]))
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            rank=self.rank,
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            transposed=self.transposed,
            conv_only=self.conv_only,
            dropout=self.dropout,
            data_format=self.data_format,
            strategy=self.strategy,
            lifted_axis_last=self.lifted_axis_last,
            broadcast_input=self.broadcast_input,
            lifted_pattern=None if self.lifted_pattern is None else list(self.lifted_pattern),
            input_patterns=patterns_config(self.input_patterns),
            dilation=self.conv.dilation,
            groups=self.conv.groups,
        )
        return config
