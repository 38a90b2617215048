"""FastDepth's NNConv5 decoder (Wofk et al., ICRA 2019), rank-generic.

A port of the decoder of dwofk/fast-depth's ``MobileNetSkipAdd``
(``models.py``): five stages, each a depthwise-separable convolution
followed by a nearest x2 upsampling, additive skips, and a pointwise head:

* ``decode_conv{k}`` (``k = 1 .. 5``): ``kxk`` depthwise convolution
  (padding ``k // 2``, no bias) -> batch norm -> ReLU -> 1x1 convolution to
  ``decoder_channels[k - 1]`` (no bias) -> batch norm -> ReLU; then
  ``F.interpolate(scale_factor=2, mode="nearest")``; then, at stages 2, 3
  and 4, ``+ skip`` (the encoder map at that stride; no activation after
  the sum);
* ``decode_conv6``: 1x1 convolution to ``num_classes`` -> batch norm ->
  ReLU (the depth is non-negative).

The decoder's ReLUs are plain ReLUs (the encoder's are ReLU6); every batch
norm has PyTorch's epsilon 1e-5. The upsamplings are ``F.interpolate``
calls: 0 MACs under thop's rules (``Upsample(count_macs=False)``).

**SL twin.** Built with ``spatial_dims=3`` on levels lifted to one depth
(SL-FastDepth: depth 16 on every level, paper Table VI), every convolution
and batch norm is 3-D (``kxkxk`` depthwise kernels) and the fixed x2
upsamplings scale the in-plane axes only: ``upsample_scale`` defaults to
``(1, 2, 2)`` at rank 3, so the lifted (first spatial) axis keeps its length
from the bottleneck to the output and the additive skips, lifted to the same
depth, fit.

Example:
>>> import numpy as np
>>> dec = FastDepthDecoder(channels=(8, 8, 8, 16), decoder_channels=(8, 8, 8, 8, 8))
>>> xs = [np.zeros((1, s, s, c), "float32") for s, c in ((16, 8), (8, 8), (4, 8), (1, 16))]
>>> tuple(dec(xs).shape)
(1, 32, 32, 1)
>>> twin = FastDepthDecoder(channels=(8, 8, 8, 16), decoder_channels=(8, 8, 8, 8, 8), spatial_dims=3)
>>> tuple(twin([x[:, None].repeat(4, axis=1) for x in xs]).shape)  # the lifted axis keeps its 4 slices
(1, 4, 32, 32, 1)
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import keras

from keras_sl.layers.convolution import Convolution
from keras_sl.layers.initializers import HostInitializer
from keras_sl.layers.normalization import BatchNorm
from keras_sl.layers.upsampling import Upsample
from keras_sl.models.mobilenet.mobilenet_backbone import check_state_keys
from keras_sl.utils.layout import standardize_data_format

#: The original's decoder: input channels (finest first: the skips at strides
#: 2, 4, 8 and the stride-32 bottleneck), stage outputs, kernel size.
FASTDEPTH_CHANNELS = (64, 128, 256, 1024)
FASTDEPTH_DECODER_CHANNELS = (512, 256, 128, 64, 32)
FASTDEPTH_STRIDES = (2, 4, 8, 32)
#: SL-FastDepth (paper Table VI: channels [16, 8, 8, 8], depth 16), read as
#: [bottleneck, skips at strides 2, 4, 8] like the paper's FastDepth row
#: [1280, 16, 24, 32] (MobileNetV2's stride-32, 2, 4, 8 widths); finest first
#: here. Every stage outputs the skips' width 8.
SL_FASTDEPTH_CHANNELS = (8, 8, 8, 16)
SL_FASTDEPTH_DECODER_CHANNELS = (8, 8, 8, 8, 8)
SL_FASTDEPTH_DEPTH = 16
BATCH_NORM_EPSILON = 1e-5


def default_upsample_scale(spatial_dims: int) -> tuple[int, ...]:
    """x2 on the in-plane axes: ``(2,)``, ``(2, 2)``, or ``(1, 2, 2)`` at rank 3
    (the lifted first axis keeps its length).

    >>> default_upsample_scale(2), default_upsample_scale(3)
    ((2, 2), (1, 2, 2))
    """
    return (2,) * spatial_dims if spatial_dims <= 2 else (1,) * (spatial_dims - 2) + (2, 2)


def skip_stages(input_strides: Sequence[int], stages: int) -> tuple[int, ...]:
    """The stage after whose upsampling each skip is added, finest first:
    ``log2(bottleneck stride / skip stride)``.

    >>> skip_stages((2, 4, 8, 32), 5), skip_stages((4, 8, 16, 32), 5)
    ((4, 3, 2), (3, 2, 1))
    """
    strides = tuple(int(s) for s in input_strides)
    bottleneck = strides[-1]
    out = []
    for s in strides[:-1]:
        ratio = bottleneck // s if s > 0 else 0
        if s <= 0 or bottleneck % s or ratio & (ratio - 1) or ratio < 2:
            raise ValueError(f"input_strides must be finer than the last (the bottleneck's) by powers of two, "
                             f"finest first, got {strides}.")
        stage = ratio.bit_length() - 1
        if stage > stages:
            raise ValueError(f"A skip at stride {s} would join after stage {stage}, but the decoder has {stages} "
                             f"stages (input_strides {strides}).")
        out.append(stage)
    if len(set(out)) != len(out) or list(out) != sorted(out, reverse=True):
        raise ValueError(f"input_strides must be distinct and increasing (finest first), got {strides}.")
    return tuple(out)


def _input_shapes(channels, input_shapes, spatial_dims: int, data_format: str) -> list[tuple]:
    if input_shapes is None:
        spatial = (None,) * spatial_dims
        return [(*spatial, c) if data_format == "channels_last" else (c, *spatial) for c in channels]
    shapes = [tuple(None if d is None else int(d) for d in s) for s in input_shapes]
    if len(shapes) != len(channels):
        raise ValueError(f"input_shapes needs one shape per input ({len(channels)}), got {len(shapes)}.")
    axis = -1 if data_format == "channels_last" else 0
    for i, (shape, c) in enumerate(zip(shapes, channels)):
        if len(shape) != spatial_dims + 1 or shape[axis] != c:
            raise ValueError(f"input_shapes[{i}] = {shape} must be a rank-{spatial_dims + 1} shape (no batch) "
                             f"with {c} channels ({data_format}).")
    return shapes


@keras.saving.register_keras_serializable(package="keras_sl")
class FastDepthDecoder(keras.Model):
    """FastDepth's NNConv5 decoder with additive skips (``MobileNetSkipAdd``), for any rank.

    Inputs: ``len(channels)`` encoder maps, FINEST FIRST: the skips, then the
    bottleneck (the original: MobileNet's ``conv1``, ``conv3``, ``conv5`` at
    strides 2, 4, 8 and ``conv13`` at stride 32). Stage ``k`` runs on the
    previous stage's upsampled output (stage 1 on the bottleneck); the skip
    at stride ``s`` joins after stage ``log2(input_strides[-1] / s)`` and
    needs as many channels as that stage outputs. Output: the depth map
    (``num_classes`` channels) at ``input_strides[-1] / 2 ** len(decoder_channels)``
    of the image's stride (the original: the image's size). ``outputs[0]``
    is the prediction; :meth:`stage_outputs_model` also gives the stage
    outputs ``decode_conv1`` .. ``decode_conv5`` (before their upsampling)
    and the pre-ReLU depth.

    Parameter and MAC counts equal thop's on the PyTorch decoder (MACs with
    :func:`keras_sl.profiler._graph_macs` on a decoder built with static
    ``input_shapes``; parameters: the trainable weights).

    Args:
        channels: input channels, finest first (skips, then the bottleneck).
        decoder_channels: output channels of ``decode_conv1`` .. ``decode_conv{n}``.
        kernel_size: the depthwise kernel (NNConv5: 5).
        input_strides: the inputs' (in-plane) strides, finest first; they
            place the skips (the original's ``(2, 4, 8, 32)``; an encoder's
            ``pyramid_strides``).
        upsample_scale: per-axis factor of the nearest upsamplings
            (default :func:`default_upsample_scale`: 2 on the in-plane axes,
            1 on the lifted axis of a rank-3 twin).
        output_relu: the original's ReLU after ``decode_conv6``'s batch norm.
        num_classes: output channels (1: depth).
        spatial_dims: 2, or 3 for the SL twin (the first spatial axis lifted).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        input_shapes: optional per-input shapes without batch (static sizes
            for MAC counting); default: unknown spatial sizes.
        kernel_initializer: ``None`` for the original's ``weights_init``
            (``N(0, sqrt(2 / (k ** rank * out)))``, drawn with NumPy), or one
            initializer for every kernel.

    Layer names: ``decode_conv{k}_dw`` / ``_dw_bn`` / ``_dw_relu`` / ``_pw``
    / ``_pw_bn`` / ``_pw_relu`` / ``_up`` / ``_skip`` (the sum),
    ``decode_conv{n+1}_pw`` / ``_bn`` / ``_relu``.

    Example:
    >>> dec = FastDepthDecoder(input_shapes=[(112, 112, 64), (56, 56, 128), (28, 28, 256), (7, 7, 1024)])
    >>> tuple(dec.outputs[0].shape), dec.skip_stages
    ((None, 224, 224, 1), (4, 3, 2))
    """

    def __init__(
        self,
        channels: Sequence[int] = FASTDEPTH_CHANNELS,
        decoder_channels: Sequence[int] = FASTDEPTH_DECODER_CHANNELS,
        kernel_size: int = 5,
        input_strides: Sequence[int] = FASTDEPTH_STRIDES,
        upsample_scale: Sequence[int] | None = None,
        output_relu: bool = True,
        num_classes: int = 1,
        spatial_dims: int = 2,
        data_format: str | None = None,
        input_shapes: Sequence[Sequence[int | None]] | None = None,
        kernel_initializer=None,
        name: str = "fastdepth_decoder",
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        channels = tuple(int(c) for c in channels)
        decoder_channels = tuple(int(c) for c in decoder_channels)
        input_strides = tuple(int(s) for s in input_strides)
        spatial_dims = int(spatial_dims)
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if not channels or not decoder_channels:
            raise ValueError(f"channels and decoder_channels must not be empty, got {channels}, {decoder_channels}.")
        if len(input_strides) != len(channels):
            raise ValueError(f"input_strides needs one stride per input ({len(channels)}), got {input_strides}.")
        if int(num_classes) < 1 or int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"num_classes must be >= 1 and kernel_size odd, got {num_classes}, {kernel_size}.")
        stages = skip_stages(input_strides, len(decoder_channels))
        for c, stage, s in zip(channels, stages, input_strides):
            if decoder_channels[stage - 1] != c:
                raise ValueError(
                    f"The skip at stride {s} ({c} channels) is added to decode_conv{stage}'s output, which has "
                    f"decoder_channels[{stage - 1}] = {decoder_channels[stage - 1]} channels: they must be equal "
                    "(project the encoder map first, e.g. with PyramidNeck's projection_channels).")
        scale = default_upsample_scale(spatial_dims) if upsample_scale is None else tuple(
            int(f) for f in upsample_scale)
        if len(scale) != spatial_dims or min(scale) < 1:
            raise ValueError(f"upsample_scale needs {spatial_dims} factors >= 1, got {upsample_scale}.")
        shapes = _input_shapes(channels, input_shapes, spatial_dims, data_format)
        kernel_size = int(kernel_size)
        shared_init = None
        if kernel_initializer is not None:
            shared_init = keras.initializers.serialize(keras.initializers.get(kernel_initializer))

        def conv(filters, kernel, groups, name):
            init = shared_init if shared_init is not None else HostInitializer(
                kind="normal", stddev=math.sqrt(2.0 / (kernel ** spatial_dims * filters)))
            return Convolution(spatial_dims, filters, kernel_size=kernel, use_bias=False, groups=groups,
                               data_format=data_format, kernel_initializer=init, name=name)

        def bn(x, name):
            return BatchNorm(epsilon=BATCH_NORM_EPSILON, data_format=data_format, name=name)(x)

        inputs = [keras.Input(shape=shape, name=f"x{i + 1}") for i, shape in enumerate(shapes)]
        skips = {stage: inputs[i] for i, stage in enumerate(stages)}
        x = inputs[-1]
        c_in = channels[-1]
        for k, c_out in enumerate(decoder_channels, start=1):
            prefix = f"decode_conv{k}"
            x = conv(c_in, kernel_size, c_in, f"{prefix}_dw")(x)
            x = keras.layers.ReLU(name=f"{prefix}_dw_relu")(bn(x, f"{prefix}_dw_bn"))
            x = conv(c_out, 1, 1, f"{prefix}_pw")(x)
            x = keras.layers.ReLU(name=f"{prefix}_pw_relu")(bn(x, f"{prefix}_pw_bn"))
            x = Upsample(scale_factor=scale, mode="nearest", data_format=data_format, count_macs=False,
                         name=f"{prefix}_up")(x)
            if k in skips:
                x = keras.layers.Add(name=f"{prefix}_skip")([x, skips[k]])
            c_in = c_out
        head = f"decode_conv{len(decoder_channels) + 1}"
        x = bn(conv(int(num_classes), 1, 1, f"{head}_pw")(x), f"{head}_bn")
        if output_relu:
            x = keras.layers.ReLU(name=f"{head}_relu")(x)
        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)

        self.channels = channels
        self.decoder_channels = decoder_channels
        self.kernel_size = kernel_size
        self.input_strides = input_strides
        self.upsample_scale = None if upsample_scale is None else scale
        self.output_relu = bool(output_relu)
        self.num_classes = int(num_classes)
        self.spatial_dims = spatial_dims
        self.data_format = data_format
        self.input_shapes = None if input_shapes is None else [list(s) for s in shapes]
        self.kernel_initializer = None if shared_init is None else keras.initializers.get(shared_init)
        self.skip_stages = stages

    @property
    def stage_output_names(self) -> tuple[str, ...]:
        """Layers whose outputs are ``decode_conv1`` .. ``decode_conv{n}``
        (before upsampling), then the pre-ReLU depth (``decode_conv{n+1}``'s
        batch norm)."""
        n = len(self.decoder_channels)
        return tuple(f"decode_conv{k}_pw_relu" for k in range(1, n + 1)) + (f"decode_conv{n + 1}_bn",)

    def stage_outputs_model(self) -> keras.Model:
        """A model from the decoder's inputs to ``[decode_conv1, ..,
        decode_conv{n}, depth before the ReLU, depth]``, sharing weights."""
        outputs = [self.get_layer(name).output for name in self.stage_output_names] + list(self.outputs)
        return keras.Model(self.inputs, outputs, name=f"{self.name}_stages")

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """See :func:`load_fastdepth_decoder_state`."""
        return load_fastdepth_decoder_state(self, state, prefix=prefix)

    def get_config(self):
        return {
            "channels": list(self.channels),
            "decoder_channels": list(self.decoder_channels),
            "kernel_size": self.kernel_size,
            "input_strides": list(self.input_strides),
            "upsample_scale": None if self.upsample_scale is None else list(self.upsample_scale),
            "output_relu": self.output_relu,
            "num_classes": self.num_classes,
            "spatial_dims": self.spatial_dims,
            "data_format": self.data_format,
            "input_shapes": self.input_shapes,
            "kernel_initializer": None if self.kernel_initializer is None
            else keras.initializers.serialize(self.kernel_initializer),
            "name": self.name,
            "trainable": self.trainable,
        }


# ---------------------------------------------------------------------------
# Original state dicts
# ---------------------------------------------------------------------------
def fastdepth_decoder_state_shapes(decoder: FastDepthDecoder, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Every original key the decoder reads (``{prefix}decode_conv{k}.*``),
    with its PyTorch shape (``num_batches_tracked`` left out).

    >>> shapes = fastdepth_decoder_state_shapes(FastDepthDecoder(kernel_initializer="zeros"))
    >>> len(shapes), shapes["decode_conv1.0.0.weight"], shapes["decode_conv6.0.weight"]
    (55, (1024, 1, 5, 5), (1, 32, 1, 1))
    """
    rank = decoder.spatial_dims
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(key, c):
        shapes.update({f"{key}{name}": (c,) for name in ("weight", "bias", "running_mean", "running_var")})

    c_in = decoder.channels[-1]
    for k, c_out in enumerate(decoder.decoder_channels, start=1):
        key = f"{prefix}decode_conv{k}."
        shapes[f"{key}0.0.weight"] = (c_in, 1) + (decoder.kernel_size,) * rank
        bn(f"{key}0.1.", c_in)
        shapes[f"{key}1.0.weight"] = (c_out, c_in) + (1,) * rank
        bn(f"{key}1.1.", c_out)
        c_in = c_out
    key = f"{prefix}decode_conv{len(decoder.decoder_channels) + 1}."
    shapes[f"{key}0.weight"] = (decoder.num_classes, c_in) + (1,) * rank
    bn(f"{key}1.", decoder.num_classes)
    return shapes


def load_fastdepth_decoder_state(decoder: FastDepthDecoder, state: Mapping, prefix: str = "") -> set[str]:
    """Copy the decoder keys of an original ``MobileNetSkipAdd`` ``state_dict`` into ``decoder``.

    Keys: ``{prefix}decode_conv{k}.{0,1}.{0,1}.*`` (depthwise / pointwise
    ``Sequential(conv, BN, ReLU)``) for ``k = 1 .. 5`` and
    ``{prefix}decode_conv6.{0,1}.*``; other keys (the encoder's ``conv*``)
    are ignored. Every decoder key must be present with its shape and every
    key under ``{prefix}decode_conv`` is used, otherwise ``ValueError`` names
    them before anything is assigned. Returns the keys used.
    """
    if not isinstance(decoder, FastDepthDecoder):
        raise TypeError(f"load_fastdepth_decoder_state needs a FastDepthDecoder, got {type(decoder).__name__}.")
    expected = fastdepth_decoder_state_shapes(decoder, prefix)
    check_state_keys(expected, state, f"{prefix}decode_conv",
                     f"{decoder.name} (channels={list(decoder.channels)}, "
                     f"decoder_channels={list(decoder.decoder_channels)}, spatial_dims={decoder.spatial_dims})")
    used: set[str] = set()
    n = len(decoder.decoder_channels)
    for k in range(1, n + 1):
        key = f"{prefix}decode_conv{k}."
        for layer, sub in (("dw", "0.0."), ("dw_bn", "0.1."), ("pw", "1.0."), ("pw_bn", "1.1.")):
            used |= decoder.get_layer(f"decode_conv{k}_{layer}").load_torch_state(state, key + sub)
    key = f"{prefix}decode_conv{n + 1}."
    used |= decoder.get_layer(f"decode_conv{n + 1}_pw").load_torch_state(state, key + "0.")
    used |= decoder.get_layer(f"decode_conv{n + 1}_bn").load_torch_state(state, key + "1.")
    return used
