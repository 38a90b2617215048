"""PVTv2 (Wang et al., 2022) as a feature-pyramid encoder.

A port of ``PyramidVisionTransformerV2`` (whai362/PVT, ``classification/pvt_v2.py``)
that returns the four stage maps instead of the classifier's pooled vector.
Each stage is an overlapping patch embedding (a strided convolution and a
LayerNorm), transformer blocks with spatial-reduction attention and a
convolutional MLP, then a LayerNorm; its map feeds the next stage.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import keras
from keras import ops

from keras_sl.layers.attention import SpatialReductionAttention
from keras_sl.layers.convolution import Convolution
from keras_sl.layers.normalization import LayerNorm
from keras_sl.layers.torch_weights import assign_from_state, torch_conv_kernel, torch_linear_kernel
from keras_sl.models.backbone import PyramidBackbone
from keras_sl.utils.layout import standardize_data_format

# The original's trunc_normal(std=0.02) init of every Linear (zero biases).
_LINEAR_INIT = {"class_name": "TruncatedNormal", "config": {"stddev": 0.02}}

_WIDE = {"embed_dims": (64, 128, 320, 512), "num_heads": (1, 2, 5, 8), "sr_ratios": (8, 4, 2, 1)}

#: The original factories ``pvt_v2_b0`` .. ``pvt_v2_b5`` and ``pvt_v2_b2_li``
#: (all with ``qkv_bias=True`` and LayerNorm eps 1e-6 in blocks and stage norms).
PVTV2_VARIANTS: dict[str, dict] = {
    "b0": {"embed_dims": (32, 64, 160, 256), "num_heads": (1, 2, 5, 8), "mlp_ratios": (8, 8, 4, 4),
           "depths": (2, 2, 2, 2), "sr_ratios": (8, 4, 2, 1)},
    "b1": {**_WIDE, "mlp_ratios": (8, 8, 4, 4), "depths": (2, 2, 2, 2)},
    "b2": {**_WIDE, "mlp_ratios": (8, 8, 4, 4), "depths": (3, 4, 6, 3)},
    "b3": {**_WIDE, "mlp_ratios": (8, 8, 4, 4), "depths": (3, 4, 18, 3)},
    "b4": {**_WIDE, "mlp_ratios": (8, 8, 4, 4), "depths": (3, 8, 27, 3)},
    "b5": {**_WIDE, "mlp_ratios": (4, 4, 4, 4), "depths": (3, 6, 40, 3)},
    "b2_li": {**_WIDE, "mlp_ratios": (8, 8, 4, 4), "depths": (3, 4, 6, 3), "linear": True},
}


def _prod(values) -> int:
    return int(math.prod(int(v) for v in values))


@keras.saving.register_keras_serializable(package="keras_sl")
class PVTv2Block(keras.layers.Layer):
    """One PVTv2 transformer block on a channels-last token map ``(B, H, W, C)``.

    ``x = x + attn(norm1(x))``, then ``x = x + mlp(norm2(x))`` with
    ``mlp = fc2(GELU(dwconv3x3(fc1(x))))`` (exact GELU; with ``linear=True`` a
    ReLU follows ``fc1`` and the attention pools its keys, PVTv2-li).
    Sub-layers: ``norm1``, ``attn`` (:class:`SpatialReductionAttention`),
    ``norm2``, ``fc1``, ``dwconv``, ``fc2``; :meth:`load_torch_state` reads the
    original ``Block``'s ``state_dict`` keys.

    Args:
        dim: channels ``C``.
        num_heads: attention heads.
        mlp_ratio: hidden channels of the MLP = ``int(dim * mlp_ratio)``.
        sr_ratio: the attention's spatial reduction.
        qkv_bias: biases in the query and key/value projections.
        linear: PVTv2-li (pooled attention, ReLU in the MLP).
        norm_epsilon: epsilon of ``norm1`` / ``norm2`` (1e-6 in PVTv2).

    Example:
    >>> import numpy as np
    >>> block = PVTv2Block(dim=8, num_heads=2, mlp_ratio=2, sr_ratio=2)
    >>> tuple(block(np.zeros((1, 4, 4, 8), "float32")).shape)
    (1, 4, 4, 8)
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        linear: bool = False,
        norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.sr_ratio = int(sr_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.linear = bool(linear)
        self.norm_epsilon = float(norm_epsilon)
        self.hidden = int(self.dim * self.mlp_ratio)
        policy = self.dtype_policy
        self.norm1 = LayerNorm(self.norm_epsilon, data_format="channels_last", dtype=policy, name="norm1")
        self.attn = SpatialReductionAttention(
            self.dim, self.num_heads, self.sr_ratio, qkv_bias=self.qkv_bias, linear=self.linear,
            norm_epsilon=1e-5, spatial_dims=2, data_format="channels_last",
            kernel_initializer=_LINEAR_INIT, dtype=policy, name="attn",
        )
        self.norm2 = LayerNorm(self.norm_epsilon, data_format="channels_last", dtype=policy, name="norm2")
        self.fc1 = keras.layers.Dense(self.hidden, kernel_initializer=_LINEAR_INIT, dtype=policy, name="fc1")
        self.dwconv = Convolution(
            2, self.hidden, 3, groups=self.hidden, data_format="channels_last", dtype=policy, name="dwconv"
        )
        self.fc2 = keras.layers.Dense(self.dim, kernel_initializer=_LINEAR_INIT, dtype=policy, name="fc2")

    def build(self, input_shape):
        if input_shape[-1] != self.dim:
            raise ValueError(f"PVTv2Block(dim={self.dim}) got input shape {tuple(input_shape)}.")
        shape = tuple(input_shape)
        hidden = shape[:-1] + (self.hidden,)
        for layer, s in ((self.norm1, shape), (self.attn, shape), (self.norm2, shape), (self.fc1, shape),
                         (self.dwconv, hidden), (self.fc2, hidden)):
            layer.build(s)

    def call(self, inputs):
        x = inputs + self.attn(self.norm1(inputs))
        h = self.fc1(self.norm2(x))
        if self.linear:
            h = ops.relu(h)
        h = ops.gelu(self.dwconv(h), approximate=False)
        return x + self.fc2(h)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, sr_ratio=self.sr_ratio,
            qkv_bias=self.qkv_bias, linear=self.linear, norm_epsilon=self.norm_epsilon,
        )
        return config

    def torch_state_shapes(self, prefix: str = "") -> dict[str, tuple[int, ...]]:
        """The original ``Block``'s ``state_dict`` keys and PyTorch shapes."""
        c, h = self.dim, self.hidden
        keys = {f"{prefix}norm1.weight": (c,), f"{prefix}norm1.bias": (c,)}
        for name, out in (("q", c), ("kv", 2 * c)):
            keys[f"{prefix}attn.{name}.weight"] = (out, c)
            if self.qkv_bias:
                keys[f"{prefix}attn.{name}.bias"] = (out,)
        keys.update({f"{prefix}attn.proj.weight": (c, c), f"{prefix}attn.proj.bias": (c,)})
        if self.attn.reduces:
            k = 1 if self.linear else self.sr_ratio
            keys.update({f"{prefix}attn.sr.weight": (c, c, k, k), f"{prefix}attn.sr.bias": (c,),
                         f"{prefix}attn.norm.weight": (c,), f"{prefix}attn.norm.bias": (c,)})
        keys.update({
            f"{prefix}norm2.weight": (c,), f"{prefix}norm2.bias": (c,),
            f"{prefix}mlp.fc1.weight": (h, c), f"{prefix}mlp.fc1.bias": (h,),
            f"{prefix}mlp.dwconv.dwconv.weight": (h, 1, 3, 3), f"{prefix}mlp.dwconv.dwconv.bias": (h,),
            f"{prefix}mlp.fc2.weight": (c, h), f"{prefix}mlp.fc2.bias": (c,),
        })
        return keys

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy an original ``Block``'s weights (``{prefix}norm1.weight``, ...,
        ``{prefix}mlp.dwconv.dwconv.weight``); returns the keys used."""
        if not self.built:
            raise ValueError("Build the layer (call it once) before loading weights.")
        used: set[str] = set()
        used |= self.norm1.load_torch_state(state, prefix + "norm1.")
        used |= self.attn.load_torch_state(state, prefix + "attn.")
        used |= self.norm2.load_torch_state(state, prefix + "norm2.")
        for dense, name in ((self.fc1, "fc1"), (self.fc2, "fc2")):
            assign_from_state(dense.kernel, state, f"{prefix}mlp.{name}.weight", used, torch_linear_kernel)
            assign_from_state(dense.bias, state, f"{prefix}mlp.{name}.bias", used)
        assign_from_state(self.dwconv.kernel, state, prefix + "mlp.dwconv.dwconv.weight", used, torch_conv_kernel)
        assign_from_state(self.dwconv.bias, state, prefix + "mlp.dwconv.dwconv.bias", used)
        return used

    def macs(self, input_shape, output_shape=None) -> int:
        """thop's count of the original ``Block``: two LayerNorms (4 per
        element), the attention (:meth:`SpatialReductionAttention.macs`), ``fc1``
        and ``fc2`` (in x out elements) and the depthwise conv (9 per hidden
        element); GELU, ReLU and the residual sums count 0."""
        shape = tuple(input_shape)
        n = _prod(shape[1:-1])
        c, h = self.dim, self.hidden
        return 2 * 4 * n * c + int(self.attn.macs(shape)) + 2 * n * c * h + 9 * n * h


@keras.saving.register_keras_serializable(package="keras_sl")
class PVTv2Backbone(PyramidBackbone):
    """PVTv2 encoder, identical to ``PyramidVisionTransformerV2`` up to its stage maps.

    Stage ``i`` embeds the previous map with a convolution (kernel 7, stride
    4, padding 3 at the first stage, kernel 3, stride 2, padding 1 after) and
    a LayerNorm (epsilon 1e-5), runs ``depths[i]`` :class:`PVTv2Block` s and a
    LayerNorm (``norm_epsilon``). Its map is the pyramid level ``P{i + 2}``
    (strides 4, 8, 16, 32), as the original's ``forward_features`` computes
    it (and the copies in EMCAD/HSNet/CASCADE return). :meth:`forward_pooled`
    gives the original classifier's feature vector (token mean of the last
    stage; its ``head`` is not part of the encoder). Presets:
    :data:`PVTV2_VARIANTS` via :meth:`from_variant`; original checkpoints load
    with :func:`keras_sl.models.pvtv2.convert_pvtv2_checkpoint`. Dropouts and
    drop path are not implemented (0, inference-exact).

    Args:
        embed_dims: channels of the four stages.
        num_heads: attention heads per stage.
        mlp_ratios: MLP expansion per stage.
        depths: blocks per stage.
        sr_ratios: attention spatial reduction per stage.
        qkv_bias: biases in the query and key/value projections.
        linear: PVTv2-li (pooled attention, ReLU in the MLPs).
        norm_epsilon: epsilon of the block and stage LayerNorms (the patch
            embeddings' and the attention reductions' keep PyTorch's 1e-5).
        in_channels: image channels (when ``input_shape`` is not given).
        input_shape: image shape without batch; spatial sizes may be None.
        data_format: ``"channels_last"`` or ``"channels_first"`` (inputs and
            pyramid maps; the network runs channels-last inside).

    Example:
    >>> import numpy as np
    >>> encoder = PVTv2Backbone(embed_dims=(8, 8, 16, 16), num_heads=(1, 1, 2, 2), mlp_ratios=(2, 2, 2, 2),
    ...                         depths=(1, 1, 1, 1), sr_ratios=(8, 4, 2, 1))
    >>> [f.shape for f in encoder.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)]
    [(1, 16, 16, 8), (1, 8, 8, 8), (1, 4, 4, 16), (1, 2, 2, 16)]
    >>> encoder.pyramid_levels, encoder.pyramid_channels
    (('P2', 'P3', 'P4', 'P5'), (8, 8, 16, 16))
    >>> encoder.forward_pooled(keras.Input((64, 64, 3))).shape
    (None, 16)
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        depths: Sequence[int] = (3, 4, 6, 3),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        qkv_bias: bool = True,
        linear: bool = False,
        norm_epsilon: float = 1e-6,
        in_channels: int = 3,
        input_shape: Sequence | None = None,
        data_format: str | None = None,
        name: str = "pvtv2_backbone",
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        lists = {"embed_dims": embed_dims, "num_heads": num_heads, "mlp_ratios": mlp_ratios,
                 "depths": depths, "sr_ratios": sr_ratios}
        if any(len(v) != 4 for v in lists.values()):
            raise ValueError(f"PVTv2 has 4 stages: give 4 values each, got {lists}.")
        embed_dims = tuple(int(v) for v in embed_dims)
        num_heads = tuple(int(v) for v in num_heads)
        mlp_ratios = tuple(float(v) if float(v) != int(v) else int(v) for v in mlp_ratios)
        depths = tuple(int(v) for v in depths)
        sr_ratios = tuple(int(v) for v in sr_ratios)
        if input_shape is None:
            input_shape = (None, None, in_channels) if data_format == "channels_last" else (in_channels, None, None)
        input_shape = tuple(None if d is None else int(d) for d in input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (H, W, C) or (C, H, W), got {input_shape}.")
        in_channels = input_shape[-1] if data_format == "channels_last" else input_shape[0]
        if in_channels is None:
            raise ValueError(f"input_shape needs a known channel count, got {input_shape}.")

        inputs = keras.Input(input_shape, name="image")
        x = inputs if data_format == "channels_last" else keras.layers.Permute((2, 3, 1), name="to_nhwc")(inputs)
        stages = []
        for i in range(4):
            s = i + 1
            x = Convolution(
                2, embed_dims[i], 7 if i == 0 else 3, strides=4 if i == 0 else 2, data_format="channels_last",
                name=f"patch_embed{s}_proj",
            )(x)
            x = LayerNorm(1e-5, data_format="channels_last", name=f"patch_embed{s}_norm")(x)
            for j in range(depths[i]):
                x = PVTv2Block(
                    embed_dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i], qkv_bias=qkv_bias, linear=linear,
                    norm_epsilon=norm_epsilon, name=f"block{s}_{j}",
                )(x)
            x = LayerNorm(norm_epsilon, data_format="channels_last", name=f"norm{s}")(x)
            stages.append(x)
        if data_format == "channels_first":
            stages = [keras.layers.Permute((3, 1, 2), name=f"stage{k + 1}_nchw")(t) for k, t in enumerate(stages)]
        pyramid = {f"P{k + 2}": t for k, t in enumerate(stages)}
        super().__init__(inputs, pyramid, data_format=data_format, name=name, **kwargs)

        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.mlp_ratios = mlp_ratios
        self.depths = depths
        self.sr_ratios = sr_ratios
        self.qkv_bias = bool(qkv_bias)
        self.linear = bool(linear)
        self.norm_epsilon = float(norm_epsilon)
        self.in_channels = int(in_channels)
        self.image_shape = input_shape

    @classmethod
    def from_variant(cls, variant: str, **kwargs) -> "PVTv2Backbone":
        """The original ``pvt_v2_<variant>`` architecture (``"b0"`` .. ``"b5"``,
        ``"b2_li"``); ``kwargs`` override or add constructor arguments."""
        if variant not in PVTV2_VARIANTS:
            raise ValueError(f"Unknown PVTv2 variant {variant!r}; choose one of {sorted(PVTV2_VARIANTS)}.")
        kwargs.setdefault("name", f"pvtv2_{variant}")
        return cls(**{**PVTV2_VARIANTS[variant], **kwargs})

    def forward_pooled(self, images, training: bool = False):
        """The original ``forward_features``: the mean of the last stage's
        (normed) tokens, ``(B, embed_dims[-1])``."""
        return pool_tokens(self(images, training=training)[-1], self.data_format)

    def get_config(self):
        return {
            "embed_dims": list(self.embed_dims),
            "num_heads": list(self.num_heads),
            "mlp_ratios": list(self.mlp_ratios),
            "depths": list(self.depths),
            "sr_ratios": list(self.sr_ratios),
            "qkv_bias": self.qkv_bias,
            "linear": self.linear,
            "norm_epsilon": self.norm_epsilon,
            "in_channels": self.in_channels,
            "input_shape": list(self.image_shape),
            "data_format": self.data_format,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def pool_tokens(stage_map, data_format: str | None = None):
    """Mean over the spatial positions (the original's token mean) of a
    ``(B, H, W, C)`` / ``(B, C, H, W)`` map -> ``(B, C)``.

    >>> import numpy as np
    >>> tuple(pool_tokens(np.ones((2, 3, 3, 5), "float32")).shape)
    (2, 5)
    """
    data_format = standardize_data_format(data_format)
    axes = (1, 2) if data_format == "channels_last" else (2, 3)
    return ops.mean(stage_map, axis=axes)
