"""The CASCADE decoder (Rahman & Marculescu, WACV 2023) for any spatial rank.

A port of ``CASCADE`` (``lib/decoders.py``) with the four 1x1 output heads of
``PVT_CASCADE`` (``lib/networks.py``), from SLDGroup/CASCADE. The same class
built with ``spatial_dims=3`` is SL-CASCADE's decoder.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras

from keras_sl.layers.convolution import Convolution
from keras_sl.models.cascade.cascade_blocks import (
    AttentionGate,
    ChannelAttention,
    ConvBlock,
    SpatialAttention,
    UpConv,
)
from keras_sl.utils.layout import channel_axis, standardize_data_format

# CASCADE's Attention_block of the finest stage has F_int = 32 whatever the channels.
FINEST_GATE_CHANNELS = 32


@keras.saving.register_keras_serializable(package="keras_sl")
class CASCADE(keras.Model):
    """CASCADE decoder with PVT_CASCADE's heads, identical to the original.

    Stage 4 (deepest): ``y = Conv_1x1(x4)``, ``y = CA4(y) * y``,
    ``y = SA(y) * y``, ``d4 = ConvBlock4(y)``. Stages ``s = 3, 2, 1``:
    ``u = Up_s(d_{s+1})`` (nearest upsampling to the skip's size -> 3^n conv
    -> BN -> ReLU), ``y = cat([AG_s(g=u, x=x_s), u])`` (gated skip first),
    ``y = CA_s(y) * y``, ``y = SA(y) * y``, ``d_s = ConvBlock_s(y)``
    (``2C -> C``). ``SA`` is one layer shared by all four stages, as in the
    original. The gates' inner channels are the original's: ``AG3``
    ``channels[1]``, ``AG2`` ``channels[0]``, ``AG1`` 32 (with ``channels``
    finest first). :meth:`stage_features` gives ``[d1, d2, d3, d4]``.

    Layer names are the original module names (``Conv_1x1``, ``ConvBlock4``,
    ``Up3``, ``AG3``, ``CA3``, ``SA``, ..., ``out_head1`` .. ``out_head4``),
    so ``get_layer("ConvBlock1").output`` is the finest stage feature ``d1``.
    Note that PVT_CASCADE's ``out_head1`` is on the *deepest* map: the
    outputs, finest first, are ``[out_head4(d1), out_head3(d2),
    out_head2(d3), out_head1(d4)]`` (the original's ``p4, p3, p2, p1``
    before their bilinear upsampling to the image size).

    Args:
        channels: the four encoder channels, finest first (the paper's
            ``(64, 128, 320, 512)``; the original lists them deepest first).
        num_classes: channels of each 1^n head; ``None`` builds no heads and
            outputs the stage features ``[d1, d2, d3, d4]`` (the decoder alone).
        spatial_dims: 2 for CASCADE, 3 for SL-CASCADE (the first spatial axis
            is the lifted one; each stage is upsampled to its skip's size).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        input_shapes: optional static shapes of the four inputs without the
            batch axis (channels included), e.g. to count MACs; spatial sizes
            default to ``None``.

    Inputs: four maps, finest first, with ``channels[i]`` channels.

    Example:
    >>> sizes = (16, 8, 4, 2)
    >>> decoder = CASCADE(channels=(16, 16, 16, 16), input_shapes=[(s, s, 16) for s in sizes])
    >>> [tuple(p.shape) for p in decoder.outputs]
    [(None, 16, 16, 1), (None, 8, 8, 1), (None, 4, 4, 1), (None, 2, 2, 1)]
    >>> decoder.get_layer("ConvBlock1").output.shape  # d1, the finest stage feature
    (None, 16, 16, 16)
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 320, 512),
        num_classes: int | None = 1,
        spatial_dims: int = 2,
        data_format: str | None = None,
        input_shapes: Sequence[Sequence[int | None]] | None = None,
        name: str = "cascade",
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        channels = tuple(int(c) for c in channels)
        if len(channels) != 4:
            raise ValueError(f"CASCADE has four stages: give 4 channels (finest first), got {channels}.")
        if int(spatial_dims) not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        spatial_dims = int(spatial_dims)
        num_classes = None if num_classes is None else int(num_classes)
        shapes = self._input_shapes(channels, spatial_dims, data_format, input_shapes)
        axis = channel_axis(data_format)
        common = dict(spatial_dims=spatial_dims, data_format=data_format)

        inputs = [keras.Input(shape=shape, name=f"x{i + 1}") for i, shape in enumerate(shapes)]
        spatial_attention = SpatialAttention(7, name="SA", **common)

        def attend(d, stage):
            weights = ChannelAttention(16, name=f"CA{stage}", **common)(d)
            d = keras.layers.Multiply(name=f"CA{stage}_apply")([weights, d])
            return keras.layers.Multiply(name=f"SA{stage}_apply")([spatial_attention(d), d])

        d = Convolution(spatial_dims, channels[3], 1, data_format=data_format, name="Conv_1x1")(inputs[3])
        d = ConvBlock(channels[3], name="ConvBlock4", **common)(attend(d, 4))
        features = [d]
        for stage in (3, 2, 1):
            skip = inputs[stage - 1]
            up = UpConv(channels[stage - 1], name=f"Up{stage}", **common)([d, skip])
            inter = channels[stage - 2] if stage > 1 else FINEST_GATE_CHANNELS
            gated = AttentionGate(inter, name=f"AG{stage}", **common)([up, skip])
            d = keras.layers.Concatenate(axis=axis, name=f"cat{stage}")([gated, up])
            d = ConvBlock(channels[stage - 1], name=f"ConvBlock{stage}", **common)(attend(d, stage))
            features.insert(0, d)

        if num_classes is None:
            outputs = features
        else:
            # PVT_CASCADE: out_head1 on d4 (deepest) ... out_head4 on d1 (finest).
            outputs = [
                Convolution(spatial_dims, num_classes, 1, data_format=data_format, name=f"out_head{4 - i}")(f)
                for i, f in enumerate(features)
            ]
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        self.channels = channels
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.data_format = data_format
        self.input_shapes = None if input_shapes is None else [list(s) for s in shapes]

    @staticmethod
    def _input_shapes(channels, spatial_dims, data_format, input_shapes) -> list[tuple]:
        if input_shapes is None:
            spatial = (None,) * spatial_dims
            return [(*spatial, c) if data_format == "channels_last" else (c, *spatial) for c in channels]
        shapes = [tuple(None if d is None else int(d) for d in s) for s in input_shapes]
        axis = -1 if data_format == "channels_last" else 0
        if len(shapes) != 4 or any(len(s) != spatial_dims + 1 or s[axis] != c for s, c in zip(shapes, channels)):
            raise ValueError(
                f"input_shapes must be four shapes without the batch axis, rank {spatial_dims + 1} "
                f"({data_format}), with channels {channels}; got {input_shapes}."
            )
        return shapes

    def stage_features(self) -> keras.Model:
        """A model from the same inputs to the stage features ``[d1, d2, d3, d4]``
        (finest first; the ConvBlock outputs, shared weights)."""
        outputs = [self.get_layer(f"ConvBlock{s}").output for s in (1, 2, 3, 4)]
        return keras.Model(self.inputs, outputs, name=f"{self.name}_features")

    def get_config(self):
        return {
            "channels": list(self.channels),
            "num_classes": self.num_classes,
            "spatial_dims": self.spatial_dims,
            "data_format": self.data_format,
            "input_shapes": self.input_shapes,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def load_cascade_state(
    decoder: CASCADE,
    state: Mapping,
    prefix: str = "decoder.",
    heads_prefix: str | None = "",
) -> set[str]:
    """Load an original CASCADE / PVT_CASCADE ``state_dict`` into ``decoder``.

    Keys: ``{prefix}<CASCADE module>.*`` (``Conv_1x1``, ``ConvBlock4``,
    ``Up3``, ``AG3``, ``CA3``, ``SA``, ...) and, when the decoder has heads and
    ``heads_prefix`` is not ``None``, ``{heads_prefix}out_head{1..4}.*``
    (PVT_CASCADE's keys: ``prefix="decoder."``, ``heads_prefix=""``; a bare
    CASCADE state dict: ``prefix=""``). Values are arrays or tensors in
    PyTorch layouts. Every key under those names must be used exactly once
    (other keys, e.g. the encoder's ``backbone.*``, are left alone).

    Returns the set of keys used. Raises ``KeyError`` naming missing keys and
    ``ValueError`` naming unused ones or mismatched shapes.
    """
    modules = ["Conv_1x1", "ConvBlock4", "Up3", "AG3", "ConvBlock3", "Up2", "AG2", "ConvBlock2",
               "Up1", "AG1", "ConvBlock1", "CA4", "CA3", "CA2", "CA1", "SA"]
    load_heads = decoder.num_classes is not None and heads_prefix is not None
    used: set[str] = set()
    try:
        for module in modules:
            layer = decoder.get_layer(module)
            if isinstance(layer, Convolution):
                used |= layer.load_torch_state(state, f"{prefix}{module}.")
            else:
                used |= layer.load_torch_state(state, f"{prefix}{module}.")
        if load_heads:
            for k in (1, 2, 3, 4):
                used |= decoder.get_layer(f"out_head{k}").load_torch_state(state, f"{heads_prefix}out_head{k}.")
    except KeyError as err:
        raise KeyError(
            f"load_cascade_state: the state dict lacks {err.args[0]!r} (prefix={prefix!r}, "
            f"heads_prefix={heads_prefix!r}); it has {len(state)} keys, e.g. {sorted(state)[:4]}."
        ) from None
    ours = [k for k in state if k.startswith(prefix)
            or (load_heads and k.startswith(f"{heads_prefix}out_head"))]
    unused = sorted(set(ours) - used)
    if unused:
        raise ValueError(f"load_cascade_state: {len(unused)} keys were not used: {unused}.")
    return used
