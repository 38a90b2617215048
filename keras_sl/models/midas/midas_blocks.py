"""The blocks of the MiDaS v2.1 decoder (Ranftl et al., TPAMI 2022), any rank.

Ports of two modules of isl-org/MiDaS ``midas/blocks.py`` as ``MidasNet``
uses them:

* :class:`ResidualConvUnit`: ``conv2(relu(conv1(relu(x)))) + relu(x)``
  (3x3 convolutions with bias). The original applies an in-place
  ``nn.ReLU(inplace=True)`` to its input before keeping it for the skip, so
  the skip carries ``relu(x)``, not ``x``; this port computes that.
* :class:`FeatureFusionBlock`: ``x0 [+ resConfUnit1(x1)] -> resConfUnit2 ->``
  bilinear x2 resampling with ``align_corners=True``. The original's
  resampling is a ``F.interpolate`` call: thop counts it 0 MACs.

Both take ``spatial_dims`` (1, 2 or 3): built at rank 3 they are SL-MiDaS's
blocks, the first spatial axis being the lifted one; the fusion block's
``scale_factor`` then takes one value per axis, ``(1, 2, 2)`` keeping the
lifted axis (a scale of 1 copies an axis exactly, nothing is interpolated
along it). Each block loads the original module's ``state_dict`` entries
(``load_torch_state(state, prefix)``, returns the keys used) and counts its
MACs as thop 0.1.1 counts the PyTorch module (``macs``).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import keras
from keras import ops

from keras_sl.layers.convolution import Convolution
from keras_sl.layers.initializers import HostInitializer
from keras_sl.layers.upsampling import interpolate
from keras_sl.utils.layout import spatial_axes, standardize_data_format


def _check_rank(spatial_dims: int) -> int:
    if int(spatial_dims) not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
    return int(spatial_dims)


def torch_default_initializer() -> dict:
    """A fresh serialized PyTorch default ``nn.ConvNd`` kernel init
    (``U(+-1/sqrt(fan_in))``), drawn with NumPy (:class:`HostInitializer`);
    one per layer so same-shaped kernels differ."""
    return keras.initializers.serialize(HostInitializer(kind="torch_default"))


class _MiDaSBlock(keras.layers.Layer):
    """Shared arguments (``features``, ``spatial_dims``, ``data_format``, ``kernel_initializer``)."""

    def __init__(self, features: int, spatial_dims: int = 2, data_format: str | None = None,
                 kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.features = int(features)
        if self.features < 1:
            raise ValueError(f"features must be >= 1, got {features}.")
        self.spatial_dims = _check_rank(spatial_dims)
        self.data_format = standardize_data_format(data_format)
        self.kernel_initializer = None if kernel_initializer is None else keras.initializers.get(kernel_initializer)

    @property
    def channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def _initializer(self):
        if self.kernel_initializer is None:
            return torch_default_initializer()
        return keras.initializers.serialize(self.kernel_initializer)

    def _conv(self, name: str) -> Convolution:
        return Convolution(self.spatial_dims, self.features, 3, use_bias=True, data_format=self.data_format,
                           kernel_initializer=self._initializer(), dtype=self.dtype_policy, name=name)

    def _check_input(self, shape) -> None:
        shape = tuple(shape)
        if len(shape) != self.spatial_dims + 2:
            raise ValueError(f"{self.name} expects rank-{self.spatial_dims + 2} inputs (spatial_dims="
                             f"{self.spatial_dims}), got shape {shape}.")
        if shape[self.channel_axis] != self.features:
            raise ValueError(f"{self.name} takes {self.features}-channel maps ({self.data_format}), got shape "
                             f"{shape}.")

    def _positions(self, shape) -> int:
        sizes = [shape[a] for a in spatial_axes(self.spatial_dims, self.data_format)]
        if any(s is None for s in sizes):
            raise ValueError(f"{self.name}: MACs need static spatial sizes, got shape {tuple(shape)}.")
        return int(math.prod(int(s) for s in sizes))

    def get_config(self):
        config = super().get_config()
        config.update(features=self.features, spatial_dims=self.spatial_dims, data_format=self.data_format,
                      kernel_initializer=None if self.kernel_initializer is None
                      else keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class ResidualConvUnit(_MiDaSBlock):
    """MiDaS's residual convolution unit: ``conv2(relu(conv1(relu(x)))) + relu(x)``.

    Both convolutions are 3x3 (3x3x3 at rank 3), ``features -> features``,
    with bias, no normalisation. The skip adds the *rectified* input: the
    original's in-place ReLU rewrites ``x`` before ``out + x``.

    Args:
        features: channels in and out.
        spatial_dims: 1, 2 or 3 (rank 3: SL-MiDaS, the first axis lifted).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        kernel_initializer: ``None`` for PyTorch's default conv init (drawn
            with NumPy), or a Keras initializer for both kernels. Biases start at 0.

    ``load_torch_state`` reads ``conv1.weight``, ``conv1.bias``,
    ``conv2.weight``, ``conv2.bias``.

    Example:
    >>> import numpy as np
    >>> unit = ResidualConvUnit(4)
    >>> tuple(unit(np.zeros((1, 8, 8, 4), "float32")).shape), unit.count_params()
    ((1, 8, 8, 4), 296)
    """

    def build(self, input_shape):
        self._check_input(input_shape)
        self.conv1 = self._conv("conv1")
        self.conv2 = self._conv("conv2")
        self.conv1.build(tuple(input_shape))
        self.conv2.build(tuple(input_shape))

    def call(self, inputs):
        x = ops.relu(inputs)
        return self.conv2(ops.relu(self.conv1(x))) + x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy the original ``ResidualConvUnit``'s weights (keys under ``prefix``); returns the keys used."""
        if not self.built:
            raise ValueError(f"Build {self.name} (call it once) before loading weights.")
        return self.conv1.load_torch_state(state, prefix + "conv1.") | self.conv2.load_torch_state(
            state, prefix + "conv2.")

    def macs(self, input_shape, output_shape=None) -> int:
        """thop's count: two ``features -> features`` convolutions per position (ReLU, add: 0)."""
        return 2 * self._positions(input_shape) * self.features * self.features * 3 ** self.spatial_dims


@keras.saving.register_keras_serializable(package="keras_sl")
class FeatureFusionBlock(_MiDaSBlock):
    """MiDaS's ``FeatureFusionBlock``: fuse a skip, refine, upsample.

    Called on ``x`` (the deepest level) or ``[x, skip]`` (same size):
    ``out = x + resConfUnit1(skip)`` (the first form skips this step),
    ``out = resConfUnit2(out)``, then multilinear resampling by
    ``scale_factor`` with ``align_corners`` (the original: bilinear x2,
    ``align_corners=True``, a ``F.interpolate`` call, so 0 MACs). The
    original builds ``resConfUnit1`` even where it never runs (MidasNet's
    ``refinenet4``); this layer creates it only when called with a skip, so
    its parameters match what thop counts (modules that ran).

    Args:
        features: channels of both inputs and of the output.
        scale_factor: one number, or one per spatial axis (SL-MiDaS:
            ``(1, 2, 2)``, the lifted axis kept; a scale of 1 copies that
            axis).
        align_corners: the resampling's PyTorch flag (MidasNet: ``True``).
        spatial_dims, data_format, kernel_initializer: as :class:`ResidualConvUnit`.

    ``load_torch_state`` reads ``resConfUnit1.*`` (when it runs) and
    ``resConfUnit2.*``.

    Example:
    >>> import numpy as np
    >>> block = FeatureFusionBlock(4)
    >>> x, skip = np.zeros((1, 3, 3, 4), "float32"), np.zeros((1, 3, 3, 4), "float32")
    >>> tuple(block([x, skip]).shape)
    (1, 6, 6, 4)
    >>> lifted = FeatureFusionBlock(4, scale_factor=(1, 2, 2), spatial_dims=3)  # SL-MiDaS
    >>> tuple(lifted(np.zeros((1, 5, 3, 3, 4), "float32")).shape)  # the lifted axis (5) kept
    (1, 5, 6, 6, 4)
    """

    def __init__(self, features: int, scale_factor: float | Sequence[float] = 2, align_corners: bool = True,
                 **kwargs):
        super().__init__(features, **kwargs)
        if isinstance(scale_factor, (int, float)):
            self.scale_factor = scale_factor
        else:
            self.scale_factor = [float(s) for s in scale_factor]
            if len(self.scale_factor) != self.spatial_dims:
                raise ValueError(f"scale_factor needs one value per spatial axis ({self.spatial_dims}), got "
                                 f"{scale_factor}.")
        self.align_corners = bool(align_corners)

    @staticmethod
    def _split(inputs):
        """``(x, skip or None)`` from ``x``, ``[x]`` or ``[x, skip]``."""
        if isinstance(inputs, (list, tuple)):
            if len(inputs) not in (1, 2):
                raise ValueError(f"FeatureFusionBlock takes x or [x, skip], got {len(inputs)} inputs.")
            return inputs[0], (inputs[1] if len(inputs) == 2 else None)
        return inputs, None

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            shapes = [tuple(s) for s in input_shape]
        else:
            shapes = [tuple(input_shape)]
        if len(shapes) not in (1, 2):
            raise ValueError(f"{self.name} takes x or [x, skip], got {len(shapes)} inputs.")
        for shape in shapes:
            self._check_input(shape)
        self.fuses_skip = len(shapes) == 2
        self.resConfUnit1 = None
        if self.fuses_skip:
            self.resConfUnit1 = ResidualConvUnit(**self._unit_args("resConfUnit1"))
            self.resConfUnit1.build(shapes[1])
        self.resConfUnit2 = ResidualConvUnit(**self._unit_args("resConfUnit2"))
        self.resConfUnit2.build(shapes[0])

    def _unit_args(self, name: str) -> dict:
        return dict(features=self.features, spatial_dims=self.spatial_dims, data_format=self.data_format,
                    kernel_initializer=None if self.kernel_initializer is None
                    else keras.initializers.serialize(self.kernel_initializer),
                    dtype=self.dtype_policy, name=name)

    def call(self, inputs):
        x, skip = self._split(inputs)
        if (skip is not None) != self.fuses_skip:
            raise ValueError(f"{self.name} was built {'with' if self.fuses_skip else 'without'} a skip input "
                             f"and called {'with' if skip is not None else 'without'} one.")
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        return interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=self.align_corners,
                           data_format=self.data_format)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            input_shape = input_shape[0]
        shape = list(input_shape)
        scales = self.scale_factor if isinstance(self.scale_factor, list) else [self.scale_factor] * self.spatial_dims
        for axis, scale in zip(spatial_axes(self.spatial_dims, self.data_format), scales):
            if shape[axis] is not None:
                shape[axis] = int(math.floor(shape[axis] * float(scale)))
        return tuple(shape)

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy the original ``FeatureFusionBlock``'s weights (keys under
        ``prefix``); ``resConfUnit1`` only when this block runs it. Returns the keys used."""
        if not self.built:
            raise ValueError(f"Build {self.name} (call it once) before loading weights.")
        used = self.resConfUnit2.load_torch_state(state, prefix + "resConfUnit2.")
        if self.resConfUnit1 is not None:
            used |= self.resConfUnit1.load_torch_state(state, prefix + "resConfUnit1.")
        return used

    def macs(self, input_shape, output_shape=None) -> int:
        """thop's count: the residual units that run (the ``F.interpolate`` resampling and the add: 0)."""
        units = 2 if self.fuses_skip else 1
        return units * self.resConfUnit2.macs(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(scale_factor=self.scale_factor, align_corners=self.align_corners)
        return config
