"""HSNet's decoder and prediction heads (baiboat/HSNet ``lib/pvt.py``), exact.

HSNet (Zhang et al., 2022, "HSNet: A hybrid semantic network for polyp
segmentation") decodes the four PVTv2 stage maps deepest first: the deepest
map passes a 1x1 ``transferlayer``; each ``HybridSenmentic`` block
(a one-head transformer block over the map, gated by a product of its query
map, times a residual bottleneck of the block's input, upsampled x2 bilinearly
with ``align_corners=True``) is multiplied by a ``HybridAttention`` of the
next finer skip (spatial and ECA channel gates, cross-wired between channel
halves). The heads compute 1x1 logits per stage, scale them by learned
per-image coefficients ``sigmoid(fc2(relu(fc1(sum_i avgpool(bn(dc_i(d_i)))))))``
and upsample them to the image (``align_corners=False``); HSNet's test script
predicts with the *sum* of the four upsampled gated logits, and trains with a
loss on each of them.

Quirks kept from the original (see ``../shared/reference/hsnet/config.json``):
``BasicConv2d`` has no ReLU; every norm uses eps 1e-5; the transformer block
has no spatial reduction; its "key" map is the query map's channel-major
buffer reinterpreted as channel-last (:class:`ScrambledQueryProduct`); exact
GELU; ``decoder.hb0`` is built by the original but never run, so it is not
built here and :func:`load_hsnet_state` ignores its keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from keras_sl.layers import BatchNorm, Convolution, LayerNorm, SpatialReductionAttention, Upsample, UpsampleLike
from keras_sl.models.hsnet.hsnet_blocks import (
    ChannelGate,
    ChannelHalves,
    CoefficientScale,
    GlobalAveragePool,
    Linear,
    ScrambledQueryProduct,
    TorchDefaultUniform,
)
from keras_sl.utils.layout import channel_axis, standardize_data_format

#: State-dict prefixes of modules the original builds but never runs (ignored by the converter).
UNUSED_PREFIXES = ("decoder.hb0.",)

#: HSNet's hard-coded stage channels, finest first.
HSNET_CHANNELS = (64, 128, 320, 512)

NORM_EPSILON = 1e-5  # every HSNet BatchNorm and LayerNorm (PyTorch's default)


class _Builder:
    """Creates the decoder's layers, naming each after its PyTorch module path."""

    def __init__(self, spatial_dims: int, data_format: str):
        self.rank = spatial_dims
        self.data_format = data_format
        self.torch_paths: dict[str, str] = {}  # Keras layer name -> PyTorch module path

    @staticmethod
    def keras_name(path: str) -> str:
        return path.removeprefix("decoder.").replace(".", "_")

    def module(self, layer_class, path: str, **kwargs):
        name = self.keras_name(path)
        self.torch_paths[name] = path
        return layer_class(name=name, **kwargs)

    def conv(self, x, filters: int, kernel_size: int, path: str, use_bias: bool = False, groups: int = 1):
        layer = self.module(Convolution, path, rank=self.rank, filters=filters, kernel_size=kernel_size,
                            use_bias=use_bias, groups=groups, data_format=self.data_format,
                            kernel_initializer=TorchDefaultUniform())
        return layer(x)

    def batch_norm(self, x, path: str):
        return self.module(BatchNorm, path, epsilon=NORM_EPSILON, data_format=self.data_format)(x)

    def layer_norm(self, x, path: str):
        return self.module(LayerNorm, path, epsilon=NORM_EPSILON, data_format=self.data_format)(x)

    def basic_conv(self, x, filters: int, kernel_size: int, path: str):
        """``BasicConv2d``: bias-free conv + BatchNorm (its ReLU is never called)."""
        return self.batch_norm(self.conv(x, filters, kernel_size, path + ".conv"), path + ".bn")

    def gate(self, x, source, path: str):
        """``x * Linear_Eca_block(source)``."""
        return self.module(ChannelGate, path, kernel_size=5, data_format=self.data_format)([source, x])

    def activation(self, x, kind: str, name: str):
        return keras.layers.Activation(kind, name=name)(x)

    def bottleneck(self, x, filters: int, path: str):
        n = self.keras_name(path)
        mapped = self.batch_norm(self.conv(x, filters, 1, path + ".map"), path + ".bn_map")
        y = self.activation(self.batch_norm(self.conv(x, filters // 4, 1, path + ".conv0"), path + ".bn0"),
                            "relu", f"{n}_relu0")
        y = self.activation(self.batch_norm(self.conv(y, filters // 4, 3, path + ".conv1"), path + ".bn1"),
                            "relu", f"{n}_relu1")
        y = self.batch_norm(self.conv(y, filters, 1, path + ".conv2"), path + ".bn2")
        return self.activation(keras.layers.Add(name=f"{n}_add")([mapped, y]), "relu", f"{n}_relu2")

    def hybrid_semantic(self, x, skip, filters: int, mlp_ratio: float, path: str):
        """``HybridSenmentic``, upsampled to the skip's size (x2, align_corners=True)."""
        n = self.keras_name(path)
        t = self.conv(x, filters, 3, path + ".patch_embed.proj", use_bias=True)
        t = self.layer_norm(t, path + ".patch_embed.norm")
        # Block: x = x + attn(norm1(x)); x = x + mlp(norm2(x)); the attention also returns its query.
        attention = self.module(SpatialReductionAttention, path + ".block.attn", dim=filters, num_heads=1,
                                sr_ratio=0, qkv_bias=False, norm_epsilon=NORM_EPSILON, spatial_dims=self.rank,
                                return_query=True, data_format=self.data_format,
                                kernel_initializer=TorchDefaultUniform())
        msa, q = attention(self.layer_norm(t, path + ".block.norm1"))
        t = keras.layers.Add(name=f"{n}_block_add1")([t, msa])
        hidden = int(filters * mlp_ratio)
        h = self.layer_norm(t, path + ".block.norm2")
        h = self.conv(h, hidden, 1, path + ".block.mlp.fc1", use_bias=True)
        h = self.conv(h, hidden, 3, path + ".block.mlp.dwconv.dwconv", use_bias=True, groups=hidden)
        h = self.activation(h, "gelu", f"{n}_block_mlp_gelu")  # exact (erf) GELU
        h = self.conv(h, filters, 1, path + ".block.mlp.fc2", use_bias=True)
        t = keras.layers.Add(name=f"{n}_block_add2")([t, h])
        t = self.layer_norm(t, path + ".norm")
        atten = ScrambledQueryProduct(data_format=self.data_format, name=f"{n}_atten")(q)
        t = self.gate(t, atten, path + ".gc")
        spatial = self.activation(self.basic_conv(atten, 1, 3, path + ".down_c"), "sigmoid", f"{n}_atten_s")
        t = keras.layers.Multiply(name=f"{n}_gated")([t, spatial])
        y = keras.layers.Multiply(name=f"{n}_product")([t, self.bottleneck(x, filters, path + ".conv")])
        return UpsampleLike(mode="bilinear", align_corners=True, data_format=self.data_format,
                            name=f"{n}_upsample")([y, skip])

    def hybrid_attention(self, x, channels: int, path: str):
        """``HybridAttention(C, C)``: spatial gate of the second half on the first,
        ECA gate of the first half on the conv of the second."""
        n = self.keras_name(path)
        first, second = ChannelHalves(data_format=self.data_format, name=f"{n}_split")(x)
        spatial = self.activation(self.basic_conv(second, 1, 3, path + ".down_c"), "sigmoid", f"{n}_sa")
        second = self.gate(self.basic_conv(second, channels // 2, 3, path + ".conv"), first, path + ".eca")
        first = keras.layers.Multiply(name=f"{n}_spatial")([first, spatial])
        return keras.layers.Concatenate(axis=channel_axis(self.data_format), name=f"{n}_concat")([first, second])


@keras.saving.register_keras_serializable(package="keras_sl")
class HSNetDecoder(keras.Model):
    """HSNet's decoder with its gated prediction heads (exact port, any rank).

    Inputs: the encoder's stage maps, finest first (PVTv2-b2: 64, 128, 320,
    512 channels at strides 4, 8, 16, 32; each map half the size of the
    previous one). Outputs, a list of ``len(channels) + 1`` logit maps with
    ``num_classes`` channels:

    * ``outputs[0]`` (layer ``"prediction"``): HSNet's test-time prediction,
      ``sum_i interpolate(out_i(d_i) * coeff[:, i], scale_factor=4 * 2**i,
      bilinear, align_corners=False)``, i.e. ``P1 + P2 + P3 + P4`` of its
      ``Test.py``, at 4x the finest map's size (the image size for a stride-4
      pyramid).
    * ``outputs[1 + i]`` (layers ``"pred1"``, ...): the gated stage logits
      ``out_i(d_i) * coeff[:, i]`` at stage ``i``'s own resolution, finest
      first; HSNet trains with a loss on each, upsampled to the image
      (``F.interpolate(..., bilinear)`` = layers ``"pred1_up"``, ...).

    ``d_i`` are the decoder's stage features (:attr:`stage_features`: the
    original ``Decoder``'s ``x_1 .. x_4``) and ``coeff`` the ``(B, n)`` gating
    coefficients (layer ``"coeff"``, :attr:`coefficients`).

    The channel widths follow ``channels`` (HSNet hard-codes the default);
    every width must be even (``HybridAttention`` splits the channels in
    halves). :func:`load_hsnet_state` loads the original ``HSNet`` state dict.
    Built at ``spatial_dims=3`` every layer works on volumes; HSNet has no SL
    twin, and the heads' final upsampling then scales every axis.

    Args:
        channels: stage channels, finest first.
        mlp_ratio: hidden width of the transformer blocks' MLP (4).
        gate_channels: width of the ``dc_i`` projections and ``fc1`` (64).
        num_classes: logit channels of the ``out_i`` heads.
        spatial_dims: rank of the maps (2).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        input_shapes: optional per-input shapes without the batch axis
            (static sizes, e.g. for MAC counts); default: spatial sizes None.

    Example:
    >>> dec = HSNetDecoder(channels=(8, 16, 24, 32))
    >>> maps = [keras.Input((16 // 2**i, 16 // 2**i, c), batch_size=1) for i, c in enumerate((8, 16, 24, 32))]
    >>> [tuple(y.shape) for y in dec(maps)]  # shapes only (symbolic call)
    [(1, 64, 64, 1), (1, 16, 16, 1), (1, 8, 8, 1), (1, 4, 4, 1), (1, 2, 2, 1)]
    """

    def __init__(
        self,
        channels: Sequence[int] = HSNET_CHANNELS,
        mlp_ratio: float = 4.0,
        gate_channels: int = 64,
        num_classes: int = 1,
        spatial_dims: int = 2,
        data_format: str | None = None,
        input_shapes: Sequence[Sequence[int | None]] | None = None,
        name: str = "hsnet_decoder",
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"HSNetDecoder needs at least 2 stages, got channels={channels}.")
        if any(c < 4 or c % 2 for c in channels):
            raise ValueError(f"Every stage width must be even and >= 4 (HybridAttention halves it), got {channels}.")
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        n = len(channels)
        if input_shapes is None:
            spatial = (None,) * spatial_dims
            input_shapes = [(*spatial, c) if data_format == "channels_last" else (c, *spatial) for c in channels]
        input_shapes = [tuple(None if d is None else int(d) for d in s) for s in input_shapes]
        if len(input_shapes) != n:
            raise ValueError(f"input_shapes has {len(input_shapes)} entries for {n} stages.")
        for i, (shape, c) in enumerate(zip(input_shapes, channels)):
            if len(shape) != spatial_dims + 1 or shape[-1 if data_format == "channels_last" else 0] != c:
                raise ValueError(
                    f"input_shapes[{i}] = {shape} must be a rank-{spatial_dims + 1} shape (no batch axis) "
                    f"with {c} channels ({data_format})."
                )

        b = _Builder(spatial_dims, data_format)
        inputs = [keras.Input(shape=s, name=f"x{i + 1}") for i, s in enumerate(input_shapes)]
        # Decoder.forward: x_n = transferlayer(x_n); x = hs_j(x) * hb_{j+1}(skip), deepest first.
        features = [None] * n
        x = features[n - 1] = b.basic_conv(inputs[n - 1], channels[n - 1], 1, "decoder.transferlayer")
        for j in range(n - 1):
            i = n - 2 - j  # the skip's stage (finest = 0)
            up = b.hybrid_semantic(x, inputs[i], channels[i], mlp_ratio, f"decoder.hs{j}")
            gated = b.hybrid_attention(inputs[i], channels[i], f"decoder.hb{j + 1}")
            x = features[i] = keras.layers.Multiply(name=f"d{i + 1}")([up, gated])

        # HSNet.forward heads: coeff = sigmoid(fc2(relu(fc1(sum_i pool(bn_dc_i(dc_i(d_i)))))))
        pooled = []
        for i, d in enumerate(features):
            y = b.conv(d, gate_channels, 1, f"dc{i + 1}", use_bias=True)
            y = b.batch_norm(y, f"bn_dc{i + 1}")
            pooled.append(GlobalAveragePool(data_format=data_format, name=f"pooling{i + 1}")(y))
        y = keras.layers.Add(name="pooled_sum")(pooled)
        y = b.module(Linear, "fc1", units=gate_channels, kernel_initializer=TorchDefaultUniform())(y)
        y = b.activation(y, "relu", "fc1_relu")
        y = b.module(Linear, "fc2", units=n, kernel_initializer=TorchDefaultUniform())(y)
        coeff = b.activation(y, "sigmoid", "coeff")
        stage_logits, upsampled = [], []
        for i, d in enumerate(features):
            logits = b.conv(d, num_classes, 1, f"out{i + 1}", use_bias=True)
            logits = CoefficientScale(i, name=f"pred{i + 1}")([logits, coeff])
            stage_logits.append(logits)
            upsampled.append(Upsample(scale_factor=4 * 2**i, mode="bilinear", align_corners=False,
                                      data_format=data_format, count_macs=False, name=f"pred{i + 1}_up")(logits))
        prediction = keras.layers.Add(name="prediction")(upsampled)
        super().__init__(inputs=inputs, outputs=[prediction, *stage_logits], name=name, **kwargs)

        self.channels = channels
        self.mlp_ratio = float(mlp_ratio)
        self.gate_channels = int(gate_channels)
        self.num_classes = int(num_classes)
        self.spatial_dims = int(spatial_dims)
        self.data_format = data_format
        self.input_shapes = input_shapes
        #: Keras layer name -> PyTorch module path in HSNet's state dict.
        self.torch_paths = b.torch_paths
        self._feature_names = [f"d{i + 1}" for i in range(n - 1)] + ["transferlayer_bn"]

    @property
    def stage_features(self) -> list:
        """The decoder's outputs ``d_1 .. d_n`` (HSNet's ``x_1 .. x_4``), finest
        first, as graph tensors: ``keras.Model(dec.inputs, dec.stage_features)``."""
        return [self.get_layer(name).output for name in self._feature_names]

    @property
    def coefficients(self):
        """The ``(B, n)`` gating coefficients (graph tensor of layer ``"coeff"``)."""
        return self.get_layer("coeff").output

    def get_config(self):
        return {
            "channels": list(self.channels),
            "mlp_ratio": self.mlp_ratio,
            "gate_channels": self.gate_channels,
            "num_classes": self.num_classes,
            "spatial_dims": self.spatial_dims,
            "data_format": self.data_format,
            "input_shapes": [list(s) for s in self.input_shapes],
            "name": self.name,
            "trainable": self.trainable,
        }


def _load_layer(layer, state: Mapping, prefix: str) -> set[str]:
    if not hasattr(layer, "load_torch_state"):
        raise TypeError(f"No PyTorch loader for layer {layer.name!r} ({type(layer).__name__}).")
    return layer.load_torch_state(state, prefix)


def load_hsnet_state(decoder: HSNetDecoder, state: Mapping, skip_prefixes: Sequence[str] = ()) -> set[str]:
    """Load an original ``HSNet`` ``state_dict`` (decoder and heads) into ``decoder``.

    ``state`` maps HSNet's key names (``decoder.hs0.block.attn.q.weight``,
    ``out1.bias``, ...) to arrays or tensors. Every key must be used exactly
    once, except the never-run ``decoder.hb0.*`` (:data:`UNUSED_PREFIXES`,
    ignored) and keys under ``skip_prefixes`` (e.g. ``("backbone.",)`` for a
    full HSNet checkpoint). Raises ``KeyError`` naming a missing key and
    ``ValueError`` naming unused keys. Returns the keys used.
    """
    used: set[str] = set()
    for name, path in decoder.torch_paths.items():
        try:
            keys = _load_layer(decoder.get_layer(name), state, path + ".")
        except KeyError as err:
            raise KeyError(f"load_hsnet_state: Keras layer {name!r} (module {path!r}): {err.args[0]}") from None
        twice = used & keys
        if twice:
            raise ValueError(f"load_hsnet_state: keys used twice: {sorted(twice)}.")
        used |= keys
    ignored = tuple(UNUSED_PREFIXES) + tuple(skip_prefixes)
    unused = sorted(k for k in state if k not in used and not k.startswith(ignored))
    if unused:
        raise ValueError(
            f"load_hsnet_state: {len(unused)} state-dict keys match no layer of {decoder.name!r} "
            f"(channels {decoder.channels}): {unused[:20]}{' ...' if len(unused) > 20 else ''}"
        )
    return used
