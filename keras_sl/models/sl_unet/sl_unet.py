"""SL-UNet: Lift -> 3-D MONAI UNet (8 channels) -> slice head."""

from __future__ import annotations

from typing import Sequence

import keras

from keras_sl import backend_defaults
from keras_sl.layers.lift import Lift
from keras_sl.models.unet.unet import UNet
from keras_sl.tasks.sl_segmenter import SLSegmenter, _permutation, _permuted
from keras_sl.utils.layout import standardize_data_format


def lifted_strides(levels: int, lift_depth: int, rank: int = 2) -> tuple:
    """Per-level strides of the (k+1)-D UNet: 2 everywhere, except along the
    lifted axis once it cannot be halved any more (depth 16 halves 4 times,
    so an 8-level SL-UNet uses strides (1, 2, 2) on its 3 deepest levels).
    """
    strides, depth = [], lift_depth
    for _ in range(levels - 1):
        dz = 2 if depth % 2 == 0 and depth > 1 else 1
        depth //= dz
        strides.append(2 if dz == 2 else (1,) + (2,) * rank)
    return tuple(strides)


@keras.saving.register_keras_serializable(package="keras_sl")
class SLUNet(SLSegmenter):
    """Spatial-Lifting UNet for k-D dense prediction (paper Section III).

    The image ``(B, H, W, C)`` is lifted to ``(B, m, H, W, C)`` (eq. 1) and
    run through ``keras_sl.UNet(spatial_dims=3)`` with ``width`` channels on
    every level. Calling the model returns the per-slice logits
    ``(B, m, H, W, K)`` that training supervises (eq. 4);
    :meth:`predict` returns ``act(sum of the selected slices' logits)`` (eq. 9)
    and :meth:`predict_quality` adds the PQA score Q (eq. 11).

    Args:
        num_classes: output channels K (1 for binary segmentation).
        levels: UNet levels, 5 or 8 in the paper (any >= 2 works).
        num_res_units: residual sub-units per level (1 or 2 in the paper).
        width: channels on every level (8 in the paper).
        lift_depth: m, copies along the lifted axis (16 in the paper).
        num_selected: s, slices combined at prediction time (5).
        in_channels: image channels.
        activation: output activation, ``"auto"`` = sigmoid for K=1 else softmax;
            ``None`` for regression (slices are then averaged, not summed).
        selected_slices: initial selected slice indices (default: central ones).
        input_shape: image shape without batch; spatial sizes may be None.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
        backbone_layout: memory layout of the lifted network's activations;
            outputs and weights do not depend on it. ``"lifted_first"``:
            MONAI's ``(B, m, H, W, C)`` (or channels-first if the images are);
            ``"lifted_last"``: ``(B, H, W, m, C)``; ``"channels_first"``:
            ``(B, C, m, H, W)``. The last two fold the lifted axis into the
            channels for free (``conv_strategy="banded"``). ``"auto"``:
            :func:`keras_sl.backend_defaults.resolve_backbone_layout`.
        conv_strategy: how the lifted convolutions run, see
            :class:`keras_sl.layers.Convolution` (``"auto"``, ``"native"``,
            ``"banded"``). Except with ``"native"`` (plain Conv3D everywhere,
            the reference path), the first layer convolves a single slice of
            the lifted image, which all m slices equal.
        preprocessor: :class:`keras_sl.preprocessing.ImagePreprocessor` for
            raw images (presets carry theirs); default: pad to the stride only.

    Example:
    >>> import numpy as np
    >>> model = SLUNet(levels=3, lift_depth=4, num_selected=2)
    >>> model.predict(np.random.rand(2, 32, 32, 3), verbose=0).shape
    (2, 32, 32, 1)
    """

    def __init__(
        self,
        num_classes: int = 1,
        levels: int = 5,
        num_res_units: int = 1,
        width: int = 8,
        lift_depth: int = 16,
        num_selected: int = 5,
        in_channels: int = 3,
        kernel_size=3,
        up_kernel_size=3,
        dropout: float = 0.0,
        activation: str | None = "auto",
        selected_slices: Sequence[int] | None = None,
        input_shape: Sequence | None = None,
        data_format: str | None = None,
        backbone_layout: str = "auto",
        conv_strategy: str = "auto",
        preprocessor=None,
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        layout = backend_defaults.resolve_backbone_layout(backbone_layout)
        if input_shape is None:
            input_shape = (None, None, in_channels) if data_format == "channels_last" else (in_channels, None, None)
        input_shape = tuple(input_shape)
        rank = len(input_shape) - 1
        net_format = data_format if layout == "lifted_first" else (
            "channels_first" if layout == "channels_first" else "channels_last"
        )
        lifted_last = layout == "lifted_last"
        net_image_shape = _permuted(input_shape, _permutation(data_format, net_format, rank))
        lifted_shape = Lift(lift_depth, data_format=net_format, lifted_axis_last=lifted_last).compute_output_shape(
            (None, *net_image_shape)
        )[1:]
        # The 2-D UNet's twin at rank 3; a compact backbone takes the lifted
        # image as its one distinct slice (keras_sl.layers.lifted_structure).
        backbone = UNet(
            spatial_dims=rank + 1,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=(width,) * levels,
            strides=lifted_strides(levels, lift_depth, rank),
            num_res_units=num_res_units,
            kernel_size=kernel_size,
            up_kernel_size=up_kernel_size,
            dropout=dropout,
            input_shape=lifted_shape,
            data_format=net_format,
            conv_strategy=conv_strategy,
            lifted_axis_last=lifted_last,
            lifted_input=True,
            compact_input=UNet.runs_compact(True, conv_strategy, dropout),
            name="backbone",
        )
        super().__init__(
            backbone,
            lift_depth=lift_depth,
            num_selected=num_selected,
            activation=activation,
            selected_slices=selected_slices,
            input_shape=input_shape,
            data_format=data_format,
            preprocessor=preprocessor,
            **kwargs,
        )
        self.levels = levels
        self.num_res_units = num_res_units
        self.width = width
        self.kernel_size = kernel_size
        self.up_kernel_size = up_kernel_size
        self.dropout = dropout
        self.backbone_layout = backbone_layout
        self.conv_strategy = conv_strategy
        self.resolved_backbone_layout = layout

    # -- serialization -----------------------------------------------------------
    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "levels": self.levels,
            "num_res_units": self.num_res_units,
            "width": self.width,
            "lift_depth": self.lift_depth,
            "num_selected": self.num_selected,
            "in_channels": self.in_channels,
            "kernel_size": self.kernel_size,
            "up_kernel_size": self.up_kernel_size,
            "dropout": self.dropout,
            "activation": self.activation,
            "selected_slices": self.selected_slices,
            "input_shape": list(self.image_shape),
            "data_format": self.data_format,
            "backbone_layout": self.backbone_layout,
            "conv_strategy": self.conv_strategy,
            "preprocessor": self._preprocessor_config(),
            "name": self.name,
            "trainable": self.trainable,
        }
