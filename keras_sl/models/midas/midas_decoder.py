"""The MiDaS v2.1 decoder (``MidasNet``'s ``scratch``), rank-generic; SL-MiDaS at ``spatial_dims=3``.

A port of isl-org/MiDaS ``midas/midas_net.py`` (``MidasNet``) with its
blocks from ``midas/blocks.py``, the encoder left out. Levels run deepest
first, as ``MidasNet.forward``:

* ``layer{i}_rn``: 3x3 convolution, no bias, of encoder stage ``i`` to
  ``features`` channels (``_make_scratch``; optional: ``use_projections``);
* ``path_n = refinenet_n(layer_n_rn)`` (the deepest level: no skip), then
  ``path_i = refinenet_i(path_{i+1}, layer_i_rn)``: each
  :class:`~keras_sl.models.midas.midas_blocks.FeatureFusionBlock` doubles
  the in-plane size (bilinear, ``align_corners=True``);
* ``output_conv``: 3x3 conv ``features -> head_channels[0]`` (bias, no
  activation), bilinear x2 (``align_corners=False``, MiDaS's ``Interpolate``
  module), 3x3 conv ``-> head_channels[1]``, ReLU, 1x1 conv ``->
  num_classes``, ReLU when ``non_negative``.

The original returns ``torch.squeeze(out, dim=1)`` (``(B, H, W)``); this
port keeps the channel axis (``(B, H, W, num_classes)``). Both resamplings
are ``F.interpolate`` calls in the original, so thop counts them 0 MACs, and
``refinenet4.resConfUnit1`` is built there but never runs (its parameters are
not counted by thop, and this port does not create it).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras

from keras_sl.layers.convolution import Convolution
from keras_sl.layers.upsampling import Upsample
from keras_sl.models.midas.midas_blocks import FeatureFusionBlock, torch_default_initializer
from keras_sl.utils.layout import standardize_data_format

#: MidasNet's setting: ResNeXt-101 stage channels (finest first) and features.
MIDAS_CHANNELS = (256, 512, 1024, 2048)
MIDAS_FEATURES = 256
#: MidasNet's ``output_conv`` intermediate channels (hard-coded there).
MIDAS_HEAD_CHANNELS = (128, 32)
#: SL-MiDaS (paper Table VI: channels [16,16,16,16], depth 16). The paper
#: does not give its head; keras_sl's is ``(features // 2, features)`` =
#: (8, 16): at rank 3, depth 16, in-plane 56..7 (224x224) it counts
#: 5.3126 G / 0.1039 M against the paper's 5.3586 G / 0.1055 M, where
#: MidasNet's (128, 32) would give 101.7 G / 0.263 M and DPT's
#: ``(features // 2, 32)`` 8.10 G / 0.107 M.
SL_MIDAS_FEATURES = 16
SL_MIDAS_DEPTH = 16
SL_MIDAS_HEAD_CHANNELS = (8, 16)
#: ``scratch`` modules the original builds but never runs (the deepest fusion block's skip unit).
NEVER_RUN = ("refinenet4.resConfUnit1",)


def _scale(spatial_dims: int, lifted_scale: int) -> float | tuple:
    """The fixed x2 resampling per spatial axis: at rank 3 the first (lifted)
    axis is scaled by ``lifted_scale`` (1: kept), the in-plane ones by 2."""
    if spatial_dims == 3:
        return (lifted_scale, 2, 2)
    return 2


@keras.saving.register_keras_serializable(package="keras_sl")
class MiDaSDecoder(keras.Model):
    """The MiDaS v2.1 (``MidasNet``) decoder, identical to the original, at any rank.

    Inputs: ``len(channels)`` encoder maps, FINEST FIRST (MidasNet:
    ResNeXt-101 ``layer1..layer4``, strides 4..32), each exactly twice the
    in-plane size of the next deeper one (images in multiples of 32 for
    strides 4..32; :attr:`stride_multiple`). Outputs: ``[depth]``, the
    ``(B, *spatial, num_classes)`` map at four times the finest input's
    in-plane size (``refinenet1`` and the head each double it: the image
    size for a stride-4 finest level; MidasNet squeezes the channel axis).

    Layer names are the original module names: ``layer1_rn`` ..
    ``layer4_rn``, ``refinenet4`` .. ``refinenet1``, ``output_conv_0`` ..
    ``output_conv_5`` (``output_conv.<i>``; ``output_conv_5`` is the final
    ReLU, absent when ``non_negative=False``). :meth:`intermediates` gives
    ``layer*_rn``, ``path_4`` .. ``path_1``, ``depth_prerelu`` and ``depth``.
    Parameter and MAC counts equal thop's on the PyTorch module
    (:func:`keras_sl.profiler._graph_macs` on a model built with static
    ``input_shapes``): the two resamplings count 0 (``F.interpolate``).

    Built with ``spatial_dims=3`` it is SL-MiDaS's decoder on lifted levels
    (the first spatial axis is the lifted one, the same length at every
    level): every fixed x2 resampling scales the in-plane axes only
    (``scale_factor=(lifted_scale, 2, 2)``, ``lifted_scale=1``: the lifted
    axis is copied, never interpolated), and "bilinear" means multilinear on
    the in-plane axes.

    Args:
        channels: encoder channels, finest first (MidasNet's
            ``(256, 512, 1024, 2048)``). Without projections every entry must
            equal ``features``.
        features: the decoder's width (MidasNet's 256).
        non_negative: the final ReLU (MidasNet's default ``True``).
        head_channels: ``output_conv``'s two intermediate widths (hard-coded
            ``(128, 32)`` in MidasNet, whatever ``features``).
        use_projections: build the ``layer*_rn`` convolutions; ``False``
            feeds the inputs to the fusion blocks directly (the paper's Table
            VI row "MiDaS [256,256,256,256]" counts the decoder so).
        num_classes: output channels of the last 1x1 conv (MidasNet: 1).
        spatial_dims: 2, or 3 for SL-MiDaS (1 also works).
        lifted_scale: at rank 3, the scale of the lifted axis in every x2
            resampling (1: kept, the paper's single lifted depth; 2: grows
            with the in-plane axes, multilinear).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        input_shapes: optional per-input shapes without batch (static
            sizes, e.g. to count MACs); default: unknown spatial sizes.
        kernel_initializer: ``None`` for PyTorch's default conv init (drawn
            with NumPy), or one initializer for every kernel. Biases start at 0.

    Example:
    >>> shapes = [(16, 16, 8), (8, 8, 16), (4, 4, 24), (2, 2, 32)]
    >>> dec = MiDaSDecoder(channels=(8, 16, 24, 32), features=8, head_channels=(4, 4), input_shapes=shapes)
    >>> [tuple(t.shape) for t in dec.outputs]
    [(None, 64, 64, 1)]
    >>> twin = MiDaSDecoder((8,) * 4, features=8, head_channels=(4, 4), use_projections=False, spatial_dims=3,
    ...                     input_shapes=[(5, s, s, 8) for s in (16, 8, 4, 2)])  # SL-MiDaS: depth 5 kept
    >>> [tuple(t.shape) for t in twin.outputs]
    [(None, 5, 64, 64, 1)]
    """

    def __init__(
        self,
        channels: Sequence[int] = MIDAS_CHANNELS,
        features: int = MIDAS_FEATURES,
        non_negative: bool = True,
        head_channels: Sequence[int] = MIDAS_HEAD_CHANNELS,
        use_projections: bool = True,
        num_classes: int = 1,
        spatial_dims: int = 2,
        lifted_scale: int = 1,
        data_format: str | None = None,
        input_shapes: Sequence[Sequence[int | None]] | None = None,
        kernel_initializer=None,
        name: str = "midas_decoder",
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        channels = tuple(int(c) for c in channels)
        features = int(features)
        head_channels = tuple(int(c) for c in head_channels)
        use_projections = bool(use_projections)
        if not channels:
            raise ValueError("MiDaSDecoder needs at least one level (channels, finest first).")
        if int(spatial_dims) not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        spatial_dims = int(spatial_dims)
        if len(head_channels) != 2 or min(head_channels) < 1:
            raise ValueError(f"head_channels must be two positive widths, got {head_channels}.")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if int(lifted_scale) < 1:
            raise ValueError(f"lifted_scale must be >= 1, got {lifted_scale}.")
        if not use_projections and any(c != features for c in channels):
            raise ValueError(f"Without projections (use_projections=False) every input must have features="
                             f"{features} channels, got channels={channels}.")
        num_classes, lifted_scale = int(num_classes), int(lifted_scale)
        shapes = self._input_shapes(channels, spatial_dims, data_format, input_shapes)
        if kernel_initializer is not None:
            kernel_initializer = keras.initializers.serialize(keras.initializers.get(kernel_initializer))

        def init():  # one initializer per layer: its own seed stream
            return torch_default_initializer() if kernel_initializer is None else kernel_initializer

        def conv(filters, kernel_size, use_bias, name):
            return Convolution(spatial_dims, filters, kernel_size, use_bias=use_bias, data_format=data_format,
                               kernel_initializer=init(), name=name)

        n = len(channels)
        scale = _scale(spatial_dims, lifted_scale)
        inputs = [keras.Input(shape=shape, name=f"layer{i + 1}") for i, shape in enumerate(shapes)]
        levels = list(inputs)
        if use_projections:
            levels = [conv(features, 3, False, f"layer{i + 1}_rn")(x) for i, x in enumerate(inputs)]
        block = dict(features=features, scale_factor=scale, align_corners=True, spatial_dims=spatial_dims,
                     data_format=data_format, kernel_initializer=kernel_initializer)
        path = FeatureFusionBlock(name=f"refinenet{n}", **block)(levels[n - 1])
        for i in range(n - 1, 0, -1):
            path = FeatureFusionBlock(name=f"refinenet{i}", **block)([path, levels[i - 1]])
        x = conv(head_channels[0], 3, True, "output_conv_0")(path)
        x = Upsample(scale_factor=scale, mode="bilinear", align_corners=False, data_format=data_format,
                     count_macs=False, name="output_conv_1")(x)
        x = conv(head_channels[1], 3, True, "output_conv_2")(x)
        x = keras.layers.ReLU(name="output_conv_3")(x)
        x = conv(num_classes, 1, True, "output_conv_4")(x)
        if non_negative:
            x = keras.layers.ReLU(name="output_conv_5")(x)
        super().__init__(inputs=inputs, outputs=[x], name=name, **kwargs)

        self.channels = channels
        self.features = features
        self.non_negative = bool(non_negative)
        self.head_channels = head_channels
        self.use_projections = use_projections
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.lifted_scale = lifted_scale
        self.data_format = data_format
        self.input_shapes = None if input_shapes is None else [list(s) for s in shapes]
        self.kernel_initializer = kernel_initializer

    @staticmethod
    def _input_shapes(channels, spatial_dims, data_format, input_shapes) -> list[tuple]:
        if input_shapes is None:
            spatial = (None,) * spatial_dims
            return [(*spatial, c) if data_format == "channels_last" else (c, *spatial) for c in channels]
        shapes = [tuple(None if d is None else int(d) for d in s) for s in input_shapes]
        axis = -1 if data_format == "channels_last" else 0
        if len(shapes) != len(channels) or any(len(s) != spatial_dims + 1 or s[axis] != c
                                               for s, c in zip(shapes, channels)):
            raise ValueError(
                f"input_shapes must be {len(channels)} shapes without the batch axis, rank {spatial_dims + 1} "
                f"({data_format}), with channels {channels}; got {input_shapes}."
            )
        return shapes

    @property
    def stride_multiple(self) -> tuple[int, ...]:
        """What the finest input's spatial sizes must divide so that every
        level is exactly twice the next deeper one: ``2 ** (levels - 1)``
        in-plane (at rank 3, ``lifted_scale ** (levels - 1)`` on the lifted axis)."""
        m = 2 ** (len(self.channels) - 1)
        if self.spatial_dims == 3:
            return (self.lifted_scale ** (len(self.channels) - 1), m, m)
        return (m,) * self.spatial_dims

    def intermediate_names(self) -> tuple[str, ...]:
        """Names of :meth:`intermediates`' outputs, in order."""
        n = len(self.channels)
        names = [f"layer{i}_rn" for i in range(1, n + 1)] if self.use_projections else []
        return (*names, *(f"path_{i}" for i in range(n, 0, -1)), "depth_prerelu", "depth")

    def intermediates(self) -> keras.Model:
        """A model from the same inputs to a dict of the original's named
        tensors (:meth:`intermediate_names`): ``layer{i}_rn``, ``path_{i}``
        (refinenet outputs), ``depth_prerelu`` (``output_conv.4``) and
        ``depth`` (shared weights)."""
        n = len(self.channels)
        outputs = {}
        if self.use_projections:
            outputs.update({f"layer{i}_rn": self.get_layer(f"layer{i}_rn").output for i in range(1, n + 1)})
        outputs.update({f"path_{i}": self.get_layer(f"refinenet{i}").output for i in range(n, 0, -1)})
        outputs["depth_prerelu"] = self.get_layer("output_conv_4").output
        outputs["depth"] = self.outputs[0]
        return keras.Model(self.inputs, outputs, name=f"{self.name}_intermediates")

    def get_config(self):
        return {
            "channels": list(self.channels),
            "features": self.features,
            "non_negative": self.non_negative,
            "head_channels": list(self.head_channels),
            "use_projections": self.use_projections,
            "num_classes": self.num_classes,
            "spatial_dims": self.spatial_dims,
            "lifted_scale": self.lifted_scale,
            "data_format": self.data_format,
            "input_shapes": self.input_shapes,
            "kernel_initializer": self.kernel_initializer,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def load_midas_state(decoder: MiDaSDecoder, state: Mapping, prefix: str = "scratch.") -> set[str]:
    """Load an original ``MidasNet`` ``state_dict`` (``scratch.*`` keys) into ``decoder``.

    Reads ``{prefix}layer{i}_rn.weight`` (when the decoder has projections),
    ``{prefix}refinenet{i}.resConfUnit{1,2}.conv{1,2}.{weight,bias}`` and
    ``{prefix}output_conv.{0,2,4}.{weight,bias}``. Values are arrays or
    tensors in PyTorch layouts (a 2-D state loads into a 2-D decoder). Every
    key under ``prefix`` must be used, except the never-run deepest
    ``refinenet{n}.resConfUnit1.*`` (:data:`NEVER_RUN`), which is ignored;
    keys outside ``prefix`` (the encoder's ``pretrained.*``) are left alone.

    Returns the set of keys used. Raises ``KeyError`` naming a missing key
    and ``ValueError`` naming unused keys or mismatched shapes.
    """
    n = len(decoder.channels)
    used: set[str] = set()
    try:
        if decoder.use_projections:
            for i in range(1, n + 1):
                used |= decoder.get_layer(f"layer{i}_rn").load_torch_state(state, f"{prefix}layer{i}_rn.")
        for i in range(1, n + 1):
            used |= decoder.get_layer(f"refinenet{i}").load_torch_state(state, f"{prefix}refinenet{i}.")
        for i in (0, 2, 4):
            used |= decoder.get_layer(f"output_conv_{i}").load_torch_state(state, f"{prefix}output_conv.{i}.")
    except KeyError as err:
        raise KeyError(
            f"load_midas_state: the state dict lacks {err.args[0]!r} (prefix={prefix!r}); it has {len(state)} "
            f"keys, e.g. {sorted(state)[:4]}."
        ) from None
    never_run = f"{prefix}refinenet{n}.resConfUnit1."
    unused = sorted(k for k in state if k.startswith(prefix) and k not in used and not k.startswith(never_run))
    if unused:
        hint = "" if decoder.use_projections else (
            " (this decoder has no layer*_rn projections: drop those keys or build it with use_projections=True)")
        raise ValueError(f"load_midas_state: {len(unused)} keys were not used: {unused}{hint}.")
    return used
