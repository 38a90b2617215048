"""EMCAD's building blocks (Rahman et al., CVPR 2024), rank-generic.

Ports of the modules of ``SLDGroup/EMCAD`` ``lib/decoders.py``:

* :class:`MSCB`, multi-scale convolution block: 1x1 expansion, parallel
  depthwise convolutions of several kernel sizes (MSDC), channel shuffle, 1x1
  projection, residual.
* :class:`EUCB`, efficient up-convolution block: nearest upsampling, depthwise
  convolution, 1x1 convolution.
* :class:`LGAG`, large-kernel grouped attention gate: gates a skip with a
  sigmoid map computed from the skip and the upsampled features.
* :class:`CAB` (channel attention) and :class:`SAB` (spatial attention): the
  two halves of the MSCAM module; each returns its sigmoid attention map,
  which the decoder multiplies with the features as the original does.

Every block works on 1-, 2- or 3-D maps (``spatial_dims``) in either data
format; pooling and attention reduce over all spatial axes. Each block loads
the original module's ``state_dict`` entries with ``load_torch_state(state,
prefix)`` (returns the keys used) and counts its MACs the way thop 0.1.1
counts the PyTorch module (``macs(input_shape, output_shape)``).

Convolution kernels start from N(0, 0.02) (drawn with NumPy,
:class:`HostInitializer`) with zero biases, the original's
``init_weights('normal')``; batch norms use PyTorch's eps 1e-5 and momentum.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from keras_sl.layers.convolution import Convolution
from keras_sl.layers.normalization import BatchNorm
from keras_sl.layers.upsampling import Upsample, UpsampleLike
from keras_sl.utils.layout import spatial_axes, standardize_data_format


#: The original's ``init_weights('normal')`` for every decoder convolution.
EMCAD_INIT = {"class_name": "HostInitializer", "config": {"kind": "normal", "stddev": 0.02, "seed": None},
              "registered_name": "keras_sl>HostInitializer", "module": None}

#: ``act_layer`` names of the original that have no parameters.
ACTIVATIONS = ("relu", "relu6", "leakyrelu", "gelu", "hswish")


def activation_fn(name: str):
    """The original's ``act_layer(name)`` as a function (``leakyrelu``: slope
    0.2; ``gelu``: exact erf form). ``prelu`` has a parameter and is not
    supported.

    >>> import numpy as np
    >>> keras.ops.convert_to_numpy(activation_fn("relu6")(np.array([-1.0, 3.0, 8.0], "float32")))
    array([0., 3., 6.], dtype=float32)
    """
    key = str(name).lower()
    table = {
        "relu": ops.relu,
        "relu6": ops.relu6,
        "leakyrelu": lambda x: ops.leaky_relu(x, negative_slope=0.2),
        "gelu": lambda x: ops.gelu(x, approximate=False),
        "hswish": ops.hard_silu,
    }
    if key not in table:
        raise ValueError(f"activation must be one of {ACTIVATIONS} (the original's parameter-free act_layer "
                         f"choices), got {name!r}.")
    return table[key]


def channel_shuffle(x, groups: int, data_format: str | None = None):
    """The original's ``channel_shuffle(x, groups)`` for any rank: channels
    viewed as ``(groups, C / groups)`` and transposed, so output channel
    ``j * groups + g`` is input channel ``g * (C / groups) + j``. An identity
    when ``groups`` is 1 or ``C``.

    >>> import numpy as np
    >>> x = np.arange(6, dtype="float32").reshape(1, 1, 6)
    >>> keras.ops.convert_to_numpy(channel_shuffle(x, 2, "channels_last"))[0, 0]
    array([0., 3., 1., 4., 2., 5.], dtype=float32)
    """
    data_format = standardize_data_format(data_format)
    axis = len(x.shape) - 1 if data_format == "channels_last" else 1
    channels = x.shape[axis]
    if channels is None:
        raise ValueError(f"channel_shuffle needs a known channel count, got shape {x.shape}.")
    if channels % groups:
        raise ValueError(f"channel_shuffle: groups={groups} must divide the {channels} channels.")
    if groups in (1, channels):
        return x
    order = np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)
    return ops.take(x, order.astype("int32"), axis=axis)



def _conv_macs(conv: Convolution, positions: int) -> int:
    """thop's count of a convolution with ``positions`` output positions."""
    return positions * conv.filters * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)


def _bn_macs(positions: int, channels: int) -> int:
    """thop's count of an affine batch norm: 4 per element."""
    return 4 * positions * channels


class _EMCADBlock(keras.layers.Layer):
    """Shared plumbing: rank, data format, kernel initializer, sublayer factories."""

    def __init__(self, spatial_dims: int = 2, data_format: str | None = None, kernel_initializer=EMCAD_INIT,
                 **kwargs):
        super().__init__(**kwargs)
        if int(spatial_dims) not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        self.spatial_dims = int(spatial_dims)
        self.data_format = standardize_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def _channels(self, shape) -> int:
        if len(shape) != self.spatial_dims + 2:
            raise ValueError(f"{self.name} expects rank-{self.spatial_dims + 2} inputs (spatial_dims="
                             f"{self.spatial_dims}), got shape {tuple(shape)}.")
        channels = shape[self.channel_axis]
        if channels is None:
            raise ValueError(f"{self.name} needs a known channel count, got input shape {tuple(shape)}.")
        return int(channels)

    def _positions(self, shape) -> int:
        """Number of spatial positions of a (static) shape."""
        sizes = [shape[a] for a in spatial_axes(self.spatial_dims, self.data_format)]
        if any(s is None for s in sizes):
            raise ValueError(f"{self.name}: MACs need static spatial sizes, got shape {tuple(shape)}.")
        return int(math.prod(int(s) for s in sizes))

    def _conv(self, filters: int, kernel_size: int, name: str, groups: int = 1, use_bias: bool = False):
        # A fresh initializer per convolution: an unseeded Keras initializer
        # instance draws the same values for same-shaped kernels.
        init = keras.initializers.serialize(self.kernel_initializer)
        return Convolution(self.spatial_dims, filters, kernel_size, groups=groups, use_bias=use_bias,
                           data_format=self.data_format, kernel_initializer=init,
                           dtype=self.dtype_policy, name=name)

    def _bn(self, name: str):
        return BatchNorm(data_format=self.data_format, dtype=self.dtype_policy, name=name)

    def _shape_with(self, shape, channels: int):
        shape = list(shape)
        shape[self.channel_axis] = channels
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(spatial_dims=self.spatial_dims, data_format=self.data_format,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class MSCB(_EMCADBlock):
    """Multi-scale convolution block (the original ``MSCB``, stride 1).

    ``pconv1`` (1x1 conv to ``C * expansion_factor`` channels, BN, act) ->
    MSDC: one depthwise conv per kernel size (pad ``k // 2``, BN, act), all on
    the same input (``dw_parallel``) or each on the running sum of the previous
    outputs -> summed (``add``) or concatenated -> channel shuffle with
    ``gcd(combined, filters)`` groups -> ``pconv2`` (1x1 conv, BN, no
    activation) -> plus the input (a 1x1 conv of it when ``filters`` differs).

    Args:
        filters: output channels (``None``: the input's).
        kernel_sizes: odd depthwise kernel sizes, in order.
        expansion_factor: expansion of ``pconv1``.
        dw_parallel: all depthwise convs read ``pconv1``'s output.
        add: sum the depthwise outputs (else concatenate them).
        activation: an :data:`ACTIVATIONS` name (the original's default ``relu6``).
        spatial_dims, data_format, kernel_initializer: as every block.

    ``load_torch_state`` reads ``pconv1.0.weight``, ``pconv1.1.*``,
    ``msdc.dwconvs.{i}.0.weight``, ``msdc.dwconvs.{i}.1.*``,
    ``pconv2.0.weight``, ``pconv2.1.*`` (and ``conv1x1.weight``).

    Example:
    >>> block = MSCB(activation="relu")
    >>> tuple(block(keras.Input((8, 8, 4))).shape)
    (None, 8, 8, 4)
    >>> block.count_params()  # convs 4*8 + 8*(1+9+25) + 8*4, BNs 4*(8+8+8+8+4)
    488
    """

    def __init__(self, filters: int | None = None, kernel_sizes: Sequence[int] = (1, 3, 5),
                 expansion_factor: float = 2, dw_parallel: bool = True, add: bool = True,
                 activation: str = "relu6", **kwargs):
        super().__init__(**kwargs)
        self.filters = None if filters is None else int(filters)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive ints, got {kernel_sizes}.")
        self.expansion_factor = expansion_factor
        self.dw_parallel = bool(dw_parallel)
        self.add = bool(add)
        self.activation = activation
        self._act = activation_fn(activation)

    def build(self, input_shape):
        self.in_channels = self._channels(input_shape)
        self.out_channels = self.filters or self.in_channels
        self.ex_channels = int(self.in_channels * self.expansion_factor)
        self.combined_channels = self.ex_channels * (1 if self.add else len(self.kernel_sizes))
        self.shuffle_groups = math.gcd(self.combined_channels, self.out_channels)
        ex, shape = self.ex_channels, tuple(input_shape)
        ex_shape = self._shape_with(shape, ex)
        self.pconv1 = self._conv(ex, 1, "pconv1")
        self.pconv1_bn = self._bn("pconv1_bn")
        self.pconv1.build(shape)
        self.pconv1_bn.build(ex_shape)
        self.dwconvs, self.dw_bns = [], []
        for i, k in enumerate(self.kernel_sizes):
            conv, bn = self._conv(ex, k, f"dwconv{i}", groups=ex), self._bn(f"dwconv{i}_bn")
            conv.build(ex_shape)
            bn.build(ex_shape)
            self.dwconvs.append(conv)
            self.dw_bns.append(bn)
        self.pconv2 = self._conv(self.out_channels, 1, "pconv2")
        self.pconv2_bn = self._bn("pconv2_bn")
        self.pconv2.build(self._shape_with(shape, self.combined_channels))
        self.pconv2_bn.build(self._shape_with(shape, self.out_channels))
        self.conv1x1 = None
        if self.out_channels != self.in_channels:
            self.conv1x1 = self._conv(self.out_channels, 1, "conv1x1")
            self.conv1x1.build(shape)

    def call(self, inputs, training=None):
        x = self._act(self.pconv1_bn(self.pconv1(inputs), training=training))
        outputs = []
        for conv, bn in zip(self.dwconvs, self.dw_bns):
            y = self._act(bn(conv(x), training=training))
            outputs.append(y)
            if not self.dw_parallel:
                x = x + y
        if self.add:
            combined = outputs[0]
            for y in outputs[1:]:
                combined = combined + y
        else:
            combined = ops.concatenate(outputs, axis=self.channel_axis)
        combined = channel_shuffle(combined, self.shuffle_groups, self.data_format)
        out = self.pconv2_bn(self.pconv2(combined), training=training)
        skip = inputs if self.conv1x1 is None else self.conv1x1(inputs)
        return skip + out

    def compute_output_shape(self, input_shape):
        return self._shape_with(input_shape, self.filters or input_shape[self.channel_axis])

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy the original ``MSCB``'s weights (keys under ``prefix``); returns the keys used."""
        used: set[str] = set()
        used |= self.pconv1.load_torch_state(state, prefix + "pconv1.0.")
        used |= self.pconv1_bn.load_torch_state(state, prefix + "pconv1.1.")
        for i, (conv, bn) in enumerate(zip(self.dwconvs, self.dw_bns)):
            used |= conv.load_torch_state(state, f"{prefix}msdc.dwconvs.{i}.0.")
            used |= bn.load_torch_state(state, f"{prefix}msdc.dwconvs.{i}.1.")
        used |= self.pconv2.load_torch_state(state, prefix + "pconv2.0.")
        used |= self.pconv2_bn.load_torch_state(state, prefix + "pconv2.1.")
        if self.conv1x1 is not None:
            used |= self.conv1x1.load_torch_state(state, prefix + "conv1x1.")
        return used

    def macs(self, input_shape, output_shape=None) -> int:
        """thop's count: the convolutions and batch norms (adds, shuffle: 0)."""
        n = self._positions(input_shape)
        total = _conv_macs(self.pconv1, n) + _bn_macs(n, self.ex_channels)
        total += sum(_conv_macs(conv, n) + _bn_macs(n, self.ex_channels) for conv in self.dwconvs)
        total += _conv_macs(self.pconv2, n) + _bn_macs(n, self.out_channels)
        if self.conv1x1 is not None:
            total += _conv_macs(self.conv1x1, n)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_sizes=list(self.kernel_sizes),
                      expansion_factor=self.expansion_factor, dw_parallel=self.dw_parallel, add=self.add,
                      activation=self.activation)
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class EUCB(_EMCADBlock):
    """Efficient up-convolution block (the original ``EUCB``).

    Nearest upsampling (``nn.Upsample(scale_factor=2)``) -> depthwise
    ``kernel_size`` conv (no bias) -> BN -> act -> channel shuffle with
    ``C`` groups (an identity) -> 1x1 conv with bias to ``filters``.

    Called on ``x`` it upsamples by 2; called on ``[x, reference]`` it
    upsamples to the reference's spatial size (the decoder passes the skip, so
    an SL twin's lifted axis may grow or not). For ``2 * in`` both are the
    same map.

    Args:
        filters: output channels.
        kernel_size: the depthwise kernel (odd; the original uses 3).
        activation: an :data:`ACTIVATIONS` name (EMCAD leaves the default ``relu``).
        spatial_dims, data_format, kernel_initializer: as every block.

    ``load_torch_state`` reads ``up_dwc.1.weight``, ``up_dwc.2.*``,
    ``pwc.0.weight``, ``pwc.0.bias``.

    Example:
    >>> up = EUCB(filters=3)
    >>> tuple(up(keras.Input((4, 4, 6))).shape)
    (None, 8, 8, 3)
    >>> tuple(up([keras.Input((4, 4, 6)), keras.Input((8, 8, 5))]).shape)  # to the reference's size
    (None, 8, 8, 3)
    """

    def __init__(self, filters: int, kernel_size: int = 3, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.activation = activation
        self._act = activation_fn(activation)
        self.upsample = Upsample(scale_factor=2, mode="nearest", data_format=self.data_format, name="upsample")
        self.upsample_like = UpsampleLike(mode="nearest", data_format=self.data_format, name="upsample_like")

    @staticmethod
    def _split(inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"EUCB takes x or [x, reference], got {len(inputs)} inputs.")
            return inputs[0], inputs[1]
        return inputs, None

    def build(self, input_shape):
        is_pair = isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0],
                                                                                          (list, tuple))
        # The convolutions run on the upsampled map: they are built on its shape.
        upsampler = self.upsample_like if is_pair else self.upsample
        shape = tuple(upsampler.compute_output_shape(input_shape))
        self.in_channels = c = self._channels(shape)
        self.up_dwc = self._conv(c, self.kernel_size, "up_dwc", groups=c)
        self.up_bn = self._bn("up_bn")
        self.pwc = self._conv(self.filters, 1, "pwc", use_bias=True)
        self.up_dwc.build(shape)
        self.up_bn.build(shape)
        self.pwc.build(shape)

    def call(self, inputs, training=None):
        x, reference = self._split(inputs)
        x = self.upsample(x) if reference is None else self.upsample_like([x, reference])
        x = self._act(self.up_bn(self.up_dwc(x), training=training))
        x = channel_shuffle(x, self.in_channels, self.data_format)
        return self.pwc(x)

    def compute_output_shape(self, input_shape):
        is_pair = isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0],
                                                                                          (list, tuple))
        if is_pair:
            shape = self.upsample_like.compute_output_shape(input_shape)
        else:
            shape = self.upsample.compute_output_shape(input_shape)
        return self._shape_with(shape, self.filters)

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy the original ``EUCB``'s weights (keys under ``prefix``); returns the keys used."""
        used: set[str] = set()
        used |= self.up_dwc.load_torch_state(state, prefix + "up_dwc.1.")
        used |= self.up_bn.load_torch_state(state, prefix + "up_dwc.2.")
        used |= self.pwc.load_torch_state(state, prefix + "pwc.0.")
        return used

    def macs(self, input_shape, output_shape) -> int:
        """thop's count at the output resolution: ``nn.Upsample`` nearest (1
        per element), the depthwise conv, its BN and the 1x1 conv."""
        n = self._positions(output_shape)
        c = self.in_channels
        return n * c + _conv_macs(self.up_dwc, n) + _bn_macs(n, c) + _conv_macs(self.pwc, n)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, activation=self.activation)
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class LGAG(_EMCADBlock):
    """Large-kernel grouped attention gate (the original ``LGAG``): ``[g, x] -> x * psi``.

    ``W_g`` and ``W_x``: grouped ``kernel_size`` convs with bias to
    ``inter_channels``, each followed by BN; ``psi = sigmoid(BN(conv1x1(act(
    W_g(g) + W_x(x)))))`` (one channel, broadcast over ``x``'s channels).

    Args:
        inter_channels: ``F_int`` (``None``: half of ``x``'s channels, as EMCAD).
        kernel_size: the gate's kernel (odd; EMCAD's ``lgag_ks``).
        groups: groups of ``W_g`` / ``W_x`` (``None``: ``inter_channels``, as
            EMCAD); 1 when ``kernel_size == 1``, as the original forces.
        activation: an :data:`ACTIVATIONS` name (EMCAD leaves the default ``relu``).
        spatial_dims, data_format, kernel_initializer: as every block.

    ``load_torch_state`` reads ``W_g.0.*``, ``W_g.1.*``, ``W_x.0.*``,
    ``W_x.1.*``, ``psi.0.*``, ``psi.1.*``.

    Example:
    >>> gate = LGAG()
    >>> tuple(gate([keras.Input((8, 8, 6)), keras.Input((8, 8, 6))]).shape)
    (None, 8, 8, 6)
    >>> tuple(gate.W_g.kernel.shape)  # 3 groups of 2 channels -> 1 channel each
    (3, 3, 2, 3)
    """

    def __init__(self, inter_channels: int | None = None, kernel_size: int = 3, groups: int | None = None,
                 activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.inter_channels = None if inter_channels is None else int(inter_channels)
        self.kernel_size = int(kernel_size)
        self.groups = None if groups is None else int(groups)
        self.activation = activation
        self._act = activation_fn(activation)

    def build(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
                and isinstance(input_shape[0], (list, tuple))):
            raise ValueError(f"LGAG is called on [g, x], got input shape {input_shape}.")
        g_shape, x_shape = (tuple(s) for s in input_shape)
        self.g_channels, self.x_channels = self._channels(g_shape), self._channels(x_shape)
        f_int = self.inter_channels or self.x_channels // 2
        groups = 1 if self.kernel_size == 1 else (self.groups or f_int)
        for what, c in (("g", self.g_channels), ("x", self.x_channels), ("inter_channels", f_int)):
            if c % groups:
                raise ValueError(f"{self.name}: groups={groups} must divide the {c} channels of {what}.")
        self.f_int, self.resolved_groups = f_int, groups
        self.W_g = self._conv(f_int, self.kernel_size, "W_g", groups=groups, use_bias=True)
        self.W_g_bn = self._bn("W_g_bn")
        self.W_x = self._conv(f_int, self.kernel_size, "W_x", groups=groups, use_bias=True)
        self.W_x_bn = self._bn("W_x_bn")
        self.psi = self._conv(1, 1, "psi", use_bias=True)
        self.psi_bn = self._bn("psi_bn")
        inter_shape = self._shape_with(x_shape, f_int)
        self.W_g.build(g_shape)
        self.W_x.build(x_shape)
        self.W_g_bn.build(inter_shape)
        self.W_x_bn.build(inter_shape)
        self.psi.build(inter_shape)
        self.psi_bn.build(self._shape_with(x_shape, 1))

    def call(self, inputs, training=None):
        g, x = inputs
        g1 = self.W_g_bn(self.W_g(g), training=training)
        x1 = self.W_x_bn(self.W_x(x), training=training)
        psi = self._act(g1 + x1)
        psi = ops.sigmoid(self.psi_bn(self.psi(psi), training=training))
        return x * psi

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy the original ``LGAG``'s weights (keys under ``prefix``); returns the keys used."""
        used: set[str] = set()
        for conv, bn, key in ((self.W_g, self.W_g_bn, "W_g"), (self.W_x, self.W_x_bn, "W_x"),
                              (self.psi, self.psi_bn, "psi")):
            used |= conv.load_torch_state(state, f"{prefix}{key}.0.")
            used |= bn.load_torch_state(state, f"{prefix}{key}.1.")
        return used

    def macs(self, input_shape, output_shape=None) -> int:
        """thop's count: ``W_g``, ``W_x``, ``psi`` and their BNs (sigmoid, add, product: 0)."""
        n = self._positions(input_shape)
        total = _conv_macs(self.W_g, n) + _conv_macs(self.W_x, n) + 2 * _bn_macs(n, self.f_int)
        return total + _conv_macs(self.psi, n) + _bn_macs(n, 1)

    def get_config(self):
        config = super().get_config()
        config.update(inter_channels=self.inter_channels, kernel_size=self.kernel_size, groups=self.groups,
                      activation=self.activation)
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class CAB(_EMCADBlock):
    """Channel attention block (the original ``CAB``): ``x -> sigmoid(a + m)``.

    ``a = fc2(act(fc1(avg_pool(x))))`` and ``m`` the same with a global max
    pool (the same ``fc1`` / ``fc2``, 1x1 convs without bias); the pools
    reduce over every spatial axis, so the output is ``(B, 1, ..., 1, C)``
    (channels last), to multiply with ``x``. ``fc1`` reduces to ``C // 16``
    channels, or to 1 when ``C < 16`` (the original's ``ratio = C``).

    Args:
        filters: output channels (``None``: the input's).
        ratio: the reduction ratio.
        activation: an :data:`ACTIVATIONS` name (EMCAD leaves the default ``relu``).
        spatial_dims, data_format, kernel_initializer: as every block.

    ``load_torch_state`` reads ``fc1.weight``, ``fc2.weight``.

    Example:
    >>> cab = CAB(spatial_dims=3)
    >>> tuple(cab(keras.Input((4, 4, 4, 32))).shape)
    (None, 1, 1, 1, 32)
    >>> tuple(cab.fc1.kernel.shape)
    (1, 1, 1, 32, 2)
    """

    def __init__(self, filters: int | None = None, ratio: int = 16, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = None if filters is None else int(filters)
        self.ratio = int(ratio)
        self.activation = activation
        self._act = activation_fn(activation)

    def build(self, input_shape):
        self.in_channels = c = self._channels(input_shape)
        ratio = c if c < self.ratio else self.ratio
        self.reduced_channels = c // ratio
        self.out_channels = self.filters or c
        pooled = self._pooled_shape(input_shape, c)
        self.fc1 = self._conv(self.reduced_channels, 1, "fc1")
        self.fc2 = self._conv(self.out_channels, 1, "fc2")
        self.fc1.build(pooled)
        self.fc2.build(self._shape_with(pooled, self.reduced_channels))

    def _pooled_shape(self, shape, channels):
        shape = list(shape)
        for a in spatial_axes(self.spatial_dims, self.data_format):
            shape[a] = 1
        shape[self.channel_axis] = channels
        return tuple(shape)

    def call(self, inputs):
        axes = spatial_axes(self.spatial_dims, self.data_format)
        avg = ops.mean(inputs, axis=axes, keepdims=True)
        peak = ops.max(inputs, axis=axes, keepdims=True)
        avg_out = self.fc2(self._act(self.fc1(avg)))
        max_out = self.fc2(self._act(self.fc1(peak)))
        return ops.sigmoid(avg_out + max_out)

    def compute_output_shape(self, input_shape):
        return self._pooled_shape(input_shape, self.filters or input_shape[self.channel_axis])

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy the original ``CAB``'s ``fc1`` / ``fc2`` weights; returns the keys used."""
        used: set[str] = set()
        used |= self.fc1.load_torch_state(state, prefix + "fc1.")
        used |= self.fc2.load_torch_state(state, prefix + "fc2.")
        return used

    def macs(self, input_shape, output_shape=None) -> int:
        """thop's count: ``AdaptiveAvgPool(1)`` ``(positions + 1) * C`` (the max
        pool 0), and ``fc1`` / ``fc2`` once per pooled branch."""
        n = self._positions(input_shape)
        return (n + 1) * self.in_channels + 2 * (_conv_macs(self.fc1, 1) + _conv_macs(self.fc2, 1))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, ratio=self.ratio, activation=self.activation)
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class SAB(_EMCADBlock):
    """Spatial attention block (the original ``SAB``): ``x -> sigmoid(conv([mean_c(x), max_c(x)]))``.

    The channel mean and channel max are concatenated (2 channels) and
    convolved by one ``kernel_size`` conv (padding ``k // 2``, no bias) to a
    one-channel map ``(B, *spatial, 1)``; at rank 3 the kernel is ``k x k x k``.
    The layer takes any channel count, so one instance can serve every stage
    (EMCAD shares one SAB across its four stages).

    Args:
        kernel_size: 3, 7 or 11, as the original asserts.
        spatial_dims, data_format, kernel_initializer: as every block.

    ``load_torch_state`` reads ``conv.weight``.

    Example:
    >>> import numpy as np
    >>> sab = SAB()
    >>> attention = sab(np.ones((1, 4, 4, 3), "float32"))  # one map per position
    >>> tuple(attention.shape), tuple(sab(keras.Input((8, 8, 5))).shape)
    ((1, 4, 4, 1), (None, 8, 8, 1))
    >>> sab.count_params()
    98
    """

    def __init__(self, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        if int(kernel_size) not in (3, 7, 11):
            raise ValueError(f"SAB's kernel_size must be 3, 7 or 11 (as the original asserts), got {kernel_size}.")
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        self._channels(input_shape)
        self.conv = self._conv(1, self.kernel_size, "conv")
        # One SAB serves maps of every size (EMCAD shares it across stages): build for any spatial size.
        shape = [None] * len(input_shape)
        shape[self.channel_axis] = 2
        self.conv.build(tuple(shape))

    def call(self, inputs):
        axis = self.channel_axis
        avg = ops.mean(inputs, axis=axis, keepdims=True)
        peak = ops.max(inputs, axis=axis, keepdims=True)
        return ops.sigmoid(self.conv(ops.concatenate([avg, peak], axis=axis)))

    def compute_output_shape(self, input_shape):
        return self._shape_with(input_shape, 1)

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy the original ``SAB``'s ``conv.weight``; returns the keys used."""
        used: set[str] = set()
        used |= self.conv.load_torch_state(state, prefix + "conv.")
        return used

    def macs(self, input_shape, output_shape=None) -> int:
        """thop's count of the ``2 -> 1`` convolution (mean, max, sigmoid: 0)."""
        return _conv_macs(self.conv, self._positions(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size)
        return config
