"""The blocks of the CASCADE decoder (Rahman & Marculescu, WACV 2023), any rank.

Each block ports one module of the original ``lib/decoders.py`` and keeps
its ``state_dict`` layout: :meth:`load_torch_state` reads the module's keys
under a prefix and returns the keys it used; :meth:`macs` counts what
``thop`` 0.1.1 counts for the module (convolutions, batch norms,
``nn.Upsample``, adaptive average pooling; activations, products, pooling
maxima and concatenations count 0). Every block takes ``spatial_dims``: the
2-D decoder's blocks and its SL twin's at rank 3 are the same code.
"""

from __future__ import annotations

import math
from typing import Mapping

import keras
from keras import ops

from keras_sl.layers.convolution import Convolution
from keras_sl.layers.normalization import BatchNorm
from keras_sl.layers.torch_weights import assign_from_state, torch_conv_kernel
from keras_sl.layers.upsampling import UpsampleLike
from keras_sl.utils.layout import spatial_axes, standardize_data_format


def _check_rank(spatial_dims: int) -> int:
    if int(spatial_dims) not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
    return int(spatial_dims)


def _with_channels(shape, channels: int, data_format: str) -> tuple:
    """``shape`` with its channel entry replaced."""
    shape = list(shape)
    shape[-1 if data_format == "channels_last" else 1] = channels
    return tuple(shape)


def _channels(shape, data_format: str):
    return shape[-1 if data_format == "channels_last" else 1]



def _require_built(layer) -> None:
    if not layer.built:
        raise ValueError(f"Build {layer.name} (call it once) before loading weights.")


class _CascadeBlock(keras.layers.Layer):
    """Shared arguments (``spatial_dims``, ``data_format``) and sublayer helpers."""

    def __init__(self, spatial_dims: int = 2, data_format: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.spatial_dims = _check_rank(spatial_dims)
        self.data_format = standardize_data_format(data_format)

    def _conv(self, filters: int, kernel_size: int, use_bias: bool, name: str) -> Convolution:
        return Convolution(
            rank=self.spatial_dims, filters=filters, kernel_size=kernel_size, use_bias=use_bias,
            data_format=self.data_format, dtype=self.dtype_policy, name=name,
        )

    def _bn(self, name: str) -> BatchNorm:
        return BatchNorm(epsilon=1e-5, data_format=self.data_format, dtype=self.dtype_policy, name=name)

    def _check_input(self, shape) -> None:
        if len(shape) != self.spatial_dims + 2:
            raise ValueError(
                f"{self.name} expects rank-{self.spatial_dims + 2} inputs (spatial_dims={self.spatial_dims}), "
                f"got shape {tuple(shape)}."
            )
        if _channels(shape, self.data_format) is None:
            raise ValueError(f"{self.name} needs inputs with known channels, got shape {tuple(shape)}.")

    def get_config(self):
        config = super().get_config()
        config.update(spatial_dims=self.spatial_dims, data_format=self.data_format)
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class ConvBlock(_CascadeBlock):
    """CASCADE's ``conv_block``: ``[3^n conv (bias) -> BatchNorm -> ReLU] x 2``.

    Keys (under the module prefix): ``conv.0`` / ``conv.3`` (convolutions),
    ``conv.1`` / ``conv.4`` (batch norms).

    Example:
    >>> ConvBlock(8, spatial_dims=3)(keras.Input((2, 4, 4, 16))).shape
    (None, 2, 4, 4, 8)
    """

    def __init__(self, filters: int, spatial_dims: int = 2, data_format: str | None = None, **kwargs):
        super().__init__(spatial_dims, data_format, **kwargs)
        self.filters = int(filters)
        self.conv1 = self._conv(self.filters, 3, True, "conv1")
        self.bn1 = self._bn("bn1")
        self.conv2 = self._conv(self.filters, 3, True, "conv2")
        self.bn2 = self._bn("bn2")

    def build(self, input_shape):
        self._check_input(input_shape)
        mid = _with_channels(input_shape, self.filters, self.data_format)
        self.conv1.build(tuple(input_shape))
        self.bn1.build(mid)
        self.conv2.build(mid)
        self.bn2.build(mid)

    def call(self, inputs, training=None):
        x = ops.relu(self.bn1(self.conv1(inputs), training=training))
        return ops.relu(self.bn2(self.conv2(x), training=training))

    def compute_output_shape(self, input_shape):
        return _with_channels(input_shape, self.filters, self.data_format)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters)
        return config

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy ``{prefix}conv.{0,1,3,4}.*``; returns the keys used."""
        _require_built(self)
        used: set[str] = set()
        used |= self.conv1.load_torch_state(state, prefix + "conv.0.")
        used |= self.bn1.load_torch_state(state, prefix + "conv.1.")
        used |= self.conv2.load_torch_state(state, prefix + "conv.3.")
        used |= self.bn2.load_torch_state(state, prefix + "conv.4.")
        return used

    def macs(self, input_shape, output_shape) -> int:
        """thop: two convolutions and two affine batch norms."""
        return (self.conv1.macs(input_shape, output_shape) + self.bn1.macs(output_shape, output_shape)
                + self.conv2.macs(output_shape, output_shape) + self.bn2.macs(output_shape, output_shape))


@keras.saving.register_keras_serializable(package="keras_sl")
class UpConv(_CascadeBlock):
    """CASCADE's ``up_conv``: nearest upsampling -> 3^n conv (bias) -> BatchNorm -> ReLU.

    Called on ``[x, reference]``: ``x`` is resized (nearest, PyTorch's index
    rule) to the spatial size of ``reference`` (the skip), which is the
    original's ``nn.Upsample(scale_factor=2)`` when the skip is twice as
    large, and also right along a lifted axis that does not grow. Keys:
    ``up.1`` (convolution), ``up.2`` (batch norm).

    Example:
    >>> UpConv(4)([keras.Input((2, 3, 8)), keras.Input((4, 6, 4))]).shape
    (None, 4, 6, 4)
    """

    def __init__(self, filters: int, spatial_dims: int = 2, data_format: str | None = None, **kwargs):
        super().__init__(spatial_dims, data_format, **kwargs)
        self.filters = int(filters)
        self.upsample = UpsampleLike(mode="nearest", data_format=self.data_format, dtype=self.dtype_policy,
                                     name="upsample")
        self.conv = self._conv(self.filters, 3, True, "conv")
        self.bn = self._bn("bn")

    def build(self, input_shape):
        x_shape, ref_shape = input_shape
        self._check_input(x_shape)
        up_shape = self.upsample.compute_output_shape((tuple(x_shape), tuple(ref_shape)))
        self.conv.build(up_shape)
        self.bn.build(_with_channels(up_shape, self.filters, self.data_format))

    def call(self, inputs, training=None):
        x = self.upsample(list(inputs))
        return ops.relu(self.bn(self.conv(x), training=training))

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        up_shape = self.upsample.compute_output_shape((tuple(x_shape), tuple(ref_shape)))
        return _with_channels(up_shape, self.filters, self.data_format)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters)
        return config

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy ``{prefix}up.1.*`` (conv) and ``{prefix}up.2.*`` (batch norm)."""
        _require_built(self)
        used: set[str] = set()
        used |= self.conv.load_torch_state(state, prefix + "up.1.")
        used |= self.bn.load_torch_state(state, prefix + "up.2.")
        return used

    def macs(self, input_shape, output_shape) -> int:
        """thop: ``nn.Upsample`` nearest (1 per output element), the conv, the batch norm."""
        up_shape = _with_channels(output_shape, _channels(input_shape, self.data_format), self.data_format)
        return (self.upsample.macs(input_shape, up_shape) + self.conv.macs(up_shape, output_shape)
                + self.bn.macs(output_shape, output_shape))


@keras.saving.register_keras_serializable(package="keras_sl")
class AttentionGate(_CascadeBlock):
    """CASCADE's ``Attention_block``: ``x * sigmoid(BN(psi(relu(BN(W_g g) + BN(W_x x)))))``.

    Called on ``[g, x]`` (the gating map and the skip, same spatial size);
    returns the gated skip. ``W_g``, ``W_x``: 1^n convolutions (bias) to
    ``inter_channels`` (``F_int``); ``psi``: 1^n convolution (bias) to one
    channel. Keys: ``W_g.{0,1}``, ``W_x.{0,1}``, ``psi.{0,1}``.

    Example:
    >>> AttentionGate(4)([keras.Input((4, 4, 8)), keras.Input((4, 4, 8))]).shape
    (None, 4, 4, 8)
    """

    def __init__(self, inter_channels: int, spatial_dims: int = 2, data_format: str | None = None, **kwargs):
        super().__init__(spatial_dims, data_format, **kwargs)
        self.inter_channels = int(inter_channels)
        self.gate_conv = self._conv(self.inter_channels, 1, True, "gate_conv")
        self.gate_bn = self._bn("gate_bn")
        self.skip_conv = self._conv(self.inter_channels, 1, True, "skip_conv")
        self.skip_bn = self._bn("skip_bn")
        self.psi_conv = self._conv(1, 1, True, "psi_conv")
        self.psi_bn = self._bn("psi_bn")

    def build(self, input_shape):
        g_shape, x_shape = (tuple(s) for s in input_shape)
        self._check_input(g_shape)
        self._check_input(x_shape)
        inter = _with_channels(x_shape, self.inter_channels, self.data_format)
        self.gate_conv.build(g_shape)
        self.gate_bn.build(inter)
        self.skip_conv.build(x_shape)
        self.skip_bn.build(inter)
        self.psi_conv.build(inter)
        self.psi_bn.build(_with_channels(x_shape, 1, self.data_format))

    def call(self, inputs, training=None):
        g, x = inputs
        g1 = self.gate_bn(self.gate_conv(g), training=training)
        x1 = self.skip_bn(self.skip_conv(x), training=training)
        psi = ops.sigmoid(self.psi_bn(self.psi_conv(ops.relu(g1 + x1)), training=training))
        return x * psi

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(inter_channels=self.inter_channels)
        return config

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy ``{prefix}W_g.*``, ``{prefix}W_x.*`` and ``{prefix}psi.*``."""
        _require_built(self)
        used: set[str] = set()
        for conv, bn, key in ((self.gate_conv, self.gate_bn, "W_g"), (self.skip_conv, self.skip_bn, "W_x"),
                              (self.psi_conv, self.psi_bn, "psi")):
            used |= conv.load_torch_state(state, f"{prefix}{key}.0.")
            used |= bn.load_torch_state(state, f"{prefix}{key}.1.")
        return used

    def macs(self, input_shape, output_shape) -> int:
        """thop: three 1^n convolutions and three affine batch norms (``input_shape``
        is the gating map's, ``output_shape`` the skip's; same spatial size)."""
        inter = _with_channels(output_shape, self.inter_channels, self.data_format)
        psi = _with_channels(output_shape, 1, self.data_format)
        return (self.gate_conv.macs(input_shape, inter) + self.gate_bn.macs(inter, inter)
                + self.skip_conv.macs(output_shape, inter) + self.skip_bn.macs(inter, inter)
                + self.psi_conv.macs(inter, psi) + self.psi_bn.macs(psi, psi))


@keras.saving.register_keras_serializable(package="keras_sl")
class ChannelAttention(_CascadeBlock):
    """CASCADE's ``ChannelAttention``: ``sigmoid(fc2(relu(fc1(avg))) + fc2(relu(fc1(max))))``.

    ``avg`` / ``max``: the input pooled over every spatial axis (any rank);
    ``fc1`` ``C -> C // reduction`` and ``fc2`` back, 1^n convolutions
    without bias shared by both branches (the original hard-codes
    ``reduction=16``). Returns the channel weights, shape ``(B, 1, ..., 1, C)``
    (``(B, C, 1, ..., 1)`` channels first), to multiply with the input.
    Weights: ``fc1_kernel`` ``(C, C // reduction)``, ``fc2_kernel``; keys
    ``fc1.weight``, ``fc2.weight``.

    Example:
    >>> ChannelAttention(spatial_dims=3)(keras.Input((2, 4, 4, 32))).shape
    (None, 1, 1, 1, 32)
    """

    def __init__(self, reduction: int = 16, spatial_dims: int = 2, data_format: str | None = None, **kwargs):
        super().__init__(spatial_dims, data_format, **kwargs)
        self.reduction = int(reduction)

    def build(self, input_shape):
        self._check_input(input_shape)
        channels = int(_channels(input_shape, self.data_format))
        hidden = channels // self.reduction
        if hidden < 1:
            raise ValueError(
                f"{self.name}: ChannelAttention maps {channels} channels to {channels} // {self.reduction} = "
                f"{hidden}; it needs at least {self.reduction} channels."
            )
        self.channels, self.hidden = channels, hidden
        init = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")  # PyTorch's default
        self.fc1_kernel = self.add_weight(name="fc1_kernel", shape=(channels, hidden), initializer=init)
        self.fc2_kernel = self.add_weight(name="fc2_kernel", shape=(hidden, channels), initializer=init)

    def call(self, inputs):
        axes = spatial_axes(self.spatial_dims, self.data_format)
        pooled = ops.stack([ops.mean(inputs, axis=axes), ops.max(inputs, axis=axes)], axis=0)  # (2, B, C)
        branches = ops.matmul(ops.relu(ops.matmul(pooled, self.fc1_kernel)), self.fc2_kernel)
        weights = ops.sigmoid(branches[0] + branches[1])
        return ops.expand_dims(weights, axes)

    def compute_output_shape(self, input_shape):
        shape = [1] * len(input_shape)
        shape[0] = input_shape[0]
        shape[-1 if self.data_format == "channels_last" else 1] = _channels(input_shape, self.data_format)
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction)
        return config

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy ``{prefix}fc1.weight`` / ``{prefix}fc2.weight`` (1^n conv weights)."""
        _require_built(self)
        used: set[str] = set()

        def dense(weight):
            return torch_conv_kernel(weight).reshape(weight.shape[1], weight.shape[0])

        assign_from_state(self.fc1_kernel, state, prefix + "fc1.weight", used, dense)
        assign_from_state(self.fc2_kernel, state, prefix + "fc2.weight", used, dense)
        return used

    def macs(self, input_shape, output_shape) -> int:
        """thop: ``AdaptiveAvgPool`` ``(window + 1)`` per output element, and
        ``fc1`` / ``fc2`` once per branch (the max pooling counts 0)."""
        axes = spatial_axes(self.spatial_dims, self.data_format)
        window = math.prod(int(input_shape[a]) for a in axes)
        return (window + 1) * self.channels + 4 * self.channels * self.hidden


@keras.saving.register_keras_serializable(package="keras_sl")
class SpatialAttention(_CascadeBlock):
    """CASCADE's ``SpatialAttention``: ``sigmoid(conv([mean_c(x), max_c(x)]))``.

    The channel mean and maximum (any number of channels, so one layer
    serves every stage) go through a ``kernel_size^n`` convolution 2 -> 1
    without bias (padding ``kernel_size // 2``). Returns the spatial weights,
    one channel, to multiply with the input. Key: ``conv1.weight``.

    Example:
    >>> sa = SpatialAttention(spatial_dims=3)
    >>> sa(keras.Input((2, 4, 4, 32))).shape, tuple(sa.conv.kernel.shape)
    ((None, 2, 4, 4, 1), (7, 7, 7, 2, 1))
    """

    def __init__(self, kernel_size: int = 7, spatial_dims: int = 2, data_format: str | None = None, **kwargs):
        super().__init__(spatial_dims, data_format, **kwargs)
        if int(kernel_size) not in (3, 7):
            raise ValueError(f"kernel_size must be 3 or 7 (as in CASCADE), got {kernel_size}.")
        self.kernel_size = int(kernel_size)
        self.conv = self._conv(1, self.kernel_size, False, "conv")

    def build(self, input_shape):
        self._check_input(input_shape)
        self.conv.build(_with_channels(input_shape, 2, self.data_format))

    def call(self, inputs):
        axis = -1 if self.data_format == "channels_last" else 1
        pooled = ops.concatenate(
            [ops.mean(inputs, axis=axis, keepdims=True), ops.max(inputs, axis=axis, keepdims=True)], axis=axis
        )
        return ops.sigmoid(self.conv(pooled))

    def compute_output_shape(self, input_shape):
        return _with_channels(input_shape, 1, self.data_format)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size)
        return config

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy ``{prefix}conv1.weight``."""
        _require_built(self)
        used: set[str] = set()
        used |= self.conv.load_torch_state(state, prefix + "conv1.")
        return used

    def macs(self, input_shape, output_shape) -> int:
        """thop: the convolution only."""
        return self.conv.macs(_with_channels(input_shape, 2, self.data_format), output_shape)
