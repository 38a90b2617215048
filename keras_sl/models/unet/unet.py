"""MONAI-exact UNet for any spatial rank (``monai.networks.nets.UNet``)."""

from __future__ import annotations

from typing import Sequence

import keras

from keras_sl.blocks.convolution_block import ConvNormAct
from keras_sl.blocks.residual_unit import ResidualUnit
from keras_sl.layers.lifted_structure import LiftedSlices
from keras_sl.models.base import SLModel
from keras_sl.utils.checks import total_strides
from keras_sl.utils.layout import channel_axis, standardize_data_format


def _lifted_axis(rank: int, data_format: str, lifted_axis_last: bool) -> int:
    """Input axis (batch included) of the first logical spatial axis."""
    first = 1 if data_format == "channels_last" else 2
    return first + (rank - 1 if lifted_axis_last else 0)


@keras.saving.register_keras_serializable(package="keras_sl")
class UNet(SLModel):
    """UNet with residual units, identical to ``monai.networks.nets.UNet``.

    The same builder makes 1-D, 2-D and 3-D networks (``spatial_dims``), so
    the SL-UNet is this 2-D network's twin built at rank 3. Layers follow
    MONAI's defaults: instance norm without affine parameters, one-parameter
    PReLU, strided convolutions down, transposed convolutions up, residual
    units when ``num_res_units > 0``, and a final up convolution without
    norm or activation. Parameter counts equal MONAI's.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: input channels.
        out_channels: output channels (classes).
        channels: channels per level; ``len(channels)`` is the number of levels.
        strides: ``len(channels) - 1`` strides; each an int or per-axis tuple.
        num_res_units: residual sub-units per down layer (0 = plain convs).
        kernel_size: convolution kernel size.
        up_kernel_size: transposed-convolution kernel size.
        dropout: dropout rate after each normalisation.
        input_shape: full input shape without batch; spatial sizes may be None.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
        conv_strategy: how convolutions run (``keras_sl.layers.Convolution``):
            ``"auto"``, ``"native"`` or ``"banded"``; weights are the same.
        lifted_axis_last: the input stores the first spatial axis last
            (``(B, H, W, D, C)``); strides stay in logical order. Used by SL
            models to make the banded fold free.
        lifted_input: the input is a lifted image (constant along the first
            spatial axis), as in SL models. Unless ``conv_strategy="native"``,
            the encoder then stores only the slices that can differ (those
            whose receptive field reached the lifted axis' padding; 2 of 8 at
            the first level of an SL-UNet) and runs on those
            (:mod:`keras_sl.layers.lifted_structure`); the decoder's up
            convolutions read the compact skips directly (no concatenation).
            Exact, outputs and gradients; with dropout only the first layer
            reads a single slice. Wrong for any other input.
        compact_input: with ``lifted_input``, the input stores only the lifted
            image's one distinct slice (size 1 along the lifted axis, e.g.
            ``keras_sl.layers.Lift(compact=True)``) while ``input_shape`` gives
            the logical length m; the m-fold lifted tensor is never built.
            Needs the compact encoder (a strategy other than ``"native"``,
            no dropout).

    Example:
    >>> import numpy as np
    >>> net = UNet(2, 3, 1, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    >>> net.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0).shape
    (1, 64, 64, 1)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        strides: Sequence = (2, 2, 2, 2),
        num_res_units: int = 0,
        kernel_size=3,
        up_kernel_size=3,
        dropout: float = 0.0,
        input_shape: Sequence | None = None,
        data_format: str | None = None,
        conv_strategy: str = "auto",
        lifted_axis_last: bool = False,
        lifted_input: bool = False,
        compact_input: bool = False,
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        channels = tuple(int(c) for c in channels)
        strides = tuple(s if isinstance(s, int) else tuple(int(v) for v in s) for s in strides)
        if len(channels) < 2:
            raise ValueError(f"UNet needs at least 2 levels, got channels={channels}.")
        if len(strides) != len(channels) - 1:
            raise ValueError(
                f"UNet needs len(strides) == len(channels) - 1; got {len(strides)} "
                f"strides for {len(channels)} levels."
            )
        if input_shape is None:
            spatial = (None,) * spatial_dims
            input_shape = (
                (*spatial, in_channels) if data_format == "channels_last" else (in_channels, *spatial)
            )
        input_shape = tuple(input_shape)
        axis = channel_axis(data_format)
        common = dict(
            rank=spatial_dims,
            data_format=data_format,
            strategy=conv_strategy,
            lifted_axis_last=lifted_axis_last,
        )
        monai_paths: dict[str, str] = {}

        # A lifted input keeps most encoder slices equal: store each once.
        lifted_axis = _lifted_axis(spatial_dims, data_format, lifted_axis_last)
        lifted_length = input_shape[lifted_axis - 1] if spatial_dims > 1 else None
        compact = UNet.runs_compact(lifted_input, conv_strategy, dropout) and bool(lifted_length)
        if compact_input and not compact:
            raise ValueError(
                "compact_input=True needs lifted_input=True, a known lifted length in "
                "input_shape, conv_strategy other than 'native' and dropout=0 (the compact "
                f"encoder); got lifted_input={lifted_input}, input_shape={input_shape}, "
                f"conv_strategy={conv_strategy!r}, dropout={dropout}. Pass the full lifted "
                "image instead (compact_input=False)."
            )

        def down_layer(filters, stride, name, path, pattern):
            monai_paths[name] = path
            extra = dict(lifted_pattern=pattern)
            if not compact:  # the first layer of an SL backbone still reads one slice
                extra = dict(broadcast_input=lifted_input and name == "down0")
            if num_res_units > 0:
                return ResidualUnit(
                    filters=filters, strides=stride, kernel_size=kernel_size,
                    subunits=num_res_units, dropout=dropout, name=name, **common, **extra,
                )
            return ConvNormAct(
                filters=filters, strides=stride, kernel_size=kernel_size,
                dropout=dropout, name=name, **common, **extra,
            )

        def expand(x, pattern, name):
            if pattern is None or pattern == tuple(range(len(pattern))):
                return x
            return LiftedSlices(pattern, lifted_axis, name=name)(x)

        def up_layers(filters, stride, is_top, name, path, input_patterns):
            conv_path = f"{path}.0" if num_res_units > 0 else path
            monai_paths[name] = conv_path
            layers = [
                ConvNormAct(
                    filters=filters, strides=stride, kernel_size=up_kernel_size,
                    transposed=True, conv_only=is_top and num_res_units == 0,
                    dropout=dropout, name=name, input_patterns=input_patterns, **common,
                )
            ]
            if num_res_units > 0:
                monai_paths[f"{name}_res"] = f"{path}.1"
                layers.append(
                    ResidualUnit(
                        filters=filters, strides=1, kernel_size=kernel_size, subunits=1,
                        dropout=dropout, last_conv_only=is_top, name=f"{name}_res",
                        lifted_pattern=layers[0].output_pattern, **common,
                    )
                )
            return layers

        def level(x, pattern, out_c, chans, strs, depth, path):
            """One level; returns its output and the output's lifted pattern."""
            c, s = chans[0], strs[0]
            layer = down_layer(c, s, f"down{depth}", f"{path}.0", pattern)
            down, pattern = layer(x), layer.output_pattern
            if len(chans) > 2:
                sub, sub_pattern = level(down, pattern, c, chans[1:], strs[1:], depth + 1, f"{path}.1.submodule")
            else:
                bottom = down_layer(chans[1], 1, "bottom", f"{path}.1.submodule", pattern)
                sub, sub_pattern = bottom(down), bottom.output_pattern
            if compact:
                # MONAI concatenates (skip, decoder) along the channels; the up
                # convolution reads both as they are instead, so the compact
                # skip is never expanded.
                y, input_patterns = [down, sub], [pattern, sub_pattern]
            else:
                y = keras.layers.Concatenate(axis=axis, name=f"skip{depth}")([down, sub])
                input_patterns = None
            for layer in up_layers(out_c, s, depth == 0, f"up{depth}", f"{path}.2", input_patterns):
                y = layer(y)
            return y, layer.output_pattern

        stored_shape = list(input_shape)
        if compact_input:
            stored_shape[lifted_axis - 1] = 1
        inputs = keras.Input(shape=tuple(stored_shape), name="image")
        x, pattern = inputs, None
        if compact:
            if not compact_input:
                x = LiftedSlices([0], lifted_axis, name="lifted_slice")(inputs)
            pattern = (0,) * int(lifted_length)
        outputs, pattern = level(x, pattern, out_channels, channels, strides, 0, "model")
        outputs = expand(outputs, pattern, "output_expand")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        self.strides = strides
        self.num_res_units = num_res_units
        self.kernel_size = kernel_size
        self.up_kernel_size = up_kernel_size
        self.dropout = dropout
        self.image_shape = input_shape
        self.data_format = data_format
        self.conv_strategy = conv_strategy
        self.lifted_axis_last = lifted_axis_last
        self.lifted_input = lifted_input
        self.compact_input = bool(compact_input)
        # Keras layer name -> MONAI module path, for keras_sl.interop.
        self.monai_paths = monai_paths

    @staticmethod
    def runs_compact(lifted_input: bool, conv_strategy: str = "auto", dropout: float = 0.0) -> bool:
        """Whether a UNet with these arguments runs its encoder compact."""
        return bool(lifted_input) and conv_strategy != "native" and not dropout

    @property
    def stride_multiple(self) -> tuple[int, ...]:
        """Each spatial size must be a multiple of this (total stride), in the
        order of the input's axes."""
        multiple = total_strides(self.strides, self.spatial_dims)
        if self.compact_input:  # one stored slice stands for the lifted axis
            multiple = (1, *multiple[1:])
        if self.lifted_axis_last:
            multiple = (*multiple[1:], multiple[0])
        return multiple

    def get_config(self):
        return {
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "channels": list(self.channels),
            "strides": [s if isinstance(s, int) else list(s) for s in self.strides],
            "num_res_units": self.num_res_units,
            "kernel_size": self.kernel_size,
            "up_kernel_size": self.up_kernel_size,
            "dropout": self.dropout,
            "input_shape": list(self.image_shape),
            "data_format": self.data_format,
            "conv_strategy": self.conv_strategy,
            "lifted_axis_last": self.lifted_axis_last,
            "lifted_input": self.lifted_input,
            "compact_input": self.compact_input,
            "name": self.name,
            "trainable": self.trainable,
        }
