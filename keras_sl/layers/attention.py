"""Spatial-reduction multi-head attention (PVTv2's ``Attention``), rank-generic.

PVTv2 (Wang et al., 2022) attends from every token to a reduced set of keys
and values: the token map is downsampled by a ``sr_ratio``-strided convolution
(kernel = stride = ``sr_ratio``), or in the "linear" variant average-pooled to
a fixed ``pool_size`` and projected by a 1x1 convolution, then layer-normed
(and, linear, passed through an exact GELU). With ``sr_ratio <= 1`` it is plain
multi-head self-attention (HSNet's decoder blocks, ``sr_ratio=0`` there).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from keras_sl.layers.normalization import LayerNorm
from keras_sl.layers.torch_weights import assign_from_state, torch_conv_kernel, torch_linear_kernel
from keras_sl.utils.layout import normalize_tuple, standardize_data_format


def _pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out, in)`` averaging weights of ``AdaptiveAvgPoolNd`` along one axis:
    bin ``i`` covers ``[floor(i * in / out), ceil((i + 1) * in / out))``."""
    i = np.arange(out_size)
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)
    j = np.arange(in_size)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return (inside / (end - start)[:, None]).astype("float32")


def _dynamic_pool_matrix(in_size, out_size: int):
    """:func:`_pool_matrix` in ``keras.ops`` for a length known only at run time."""
    in_size = ops.cast(in_size, "int32")
    i = ops.arange(out_size, dtype="int32")
    start = (i * in_size) // out_size
    end = ((i + 1) * in_size + out_size - 1) // out_size
    j = ops.arange(in_size, dtype="int32")
    inside = ops.logical_and(j[None, :] >= start[:, None], j[None, :] < end[:, None])
    return ops.cast(inside, "float32") / ops.cast(end - start, "float32")[:, None]


def adaptive_average_pool(x, output_size: Sequence[int]):
    """``AdaptiveAvgPoolNd(output_size)`` of a channels-last ``(B, *spatial, C)`` map."""
    for k, out in enumerate(output_size):
        axis = 1 + k
        length = x.shape[axis]
        weights = _pool_matrix(length, out) if length is not None else _dynamic_pool_matrix(ops.shape(x)[axis], out)
        moved = ops.moveaxis(x, axis, -1)
        x = ops.moveaxis(ops.matmul(moved, ops.transpose(ops.cast(weights, x.dtype))), -1, axis)
    return x


@keras.saving.register_keras_serializable(package="keras_sl")
class SpatialReductionAttention(keras.layers.Layer):
    """PVTv2's spatial-reduction attention for 1-, 2- or 3-D token maps.

    ``q = x Wq``; keys and values ``[k, v] = r(x) Wkv`` from the reduced
    tokens ``r(x)``; ``softmax(q k^T * scale) v`` per head (heads are
    contiguous blocks of ``dim / num_heads`` channels, ``scale`` defaults to
    ``head_dim ** -0.5``); then ``proj``. ``r``: the identity
    (``sr_ratio <= 1``), ``LayerNorm(Conv(kernel = stride = sr_ratio)(x))``,
    or with ``linear=True`` ``GELU(LayerNorm(Conv1x1(AdaptiveAvgPool(pool_size)(x))))``.
    A strided reduction drops the trailing remainder of an axis not divisible
    by ``sr_ratio``, as PyTorch's convolution does.

    Inputs: a map ``(B, *spatial, C)`` / ``(B, C, *spatial)`` (rank
    ``spatial_dims + 2``; the output has the input's layout), or tokens
    ``(B, N, C)`` with ``spatial_shape`` given to ``call`` (PyTorch's
    ``forward(x, H, W)``; tokens are row-major over the map, as
    ``flatten(2).transpose(1, 2)`` leaves them); the output is ``(B, N, C)``.
    With ``return_query=True`` the call also returns the query projection
    (before the head split, in the output's layout), which HSNet's decoder
    consumes.

    Weights, Dense layouts: ``q_kernel`` ``(C, C)``, ``kv_kernel`` ``(C, 2C)``
    (keys then values), ``proj_kernel`` ``(C, C)``, their biases,
    ``sr_kernel`` ``(*k, C, C)`` and ``sr_bias``, and the sub-layer ``norm``.
    :meth:`load_torch_state` reads the original module's ``state_dict`` keys
    (``q.weight``, ``kv.weight``, ``proj.weight``, ``sr.weight``,
    ``norm.weight``, ... with Linear weights transposed and conv weights
    permuted by :mod:`keras_sl.layers.torch_weights`). Dropouts are not
    implemented (PVTv2 and HSNet use 0).

    Args:
        dim: channels ``C``.
        num_heads: attention heads; must divide ``dim``.
        sr_ratio: spatial reduction factor (0 or 1: none).
        qkv_bias: biases in the ``q`` and ``kv`` projections (``proj`` always has one).
        linear: PVTv2-li's pooled reduction instead of the strided one.
        qk_scale: overrides ``head_dim ** -0.5``.
        norm_epsilon: the reduction's LayerNorm epsilon (PyTorch's 1e-5 in PVTv2).
        pool_size: pooled size for ``linear=True`` (int or one per axis).
        spatial_dims: rank of the token map (1, 2 or 3).
        return_query: also return the query projection.
        data_format: layout of map inputs.
        kernel_initializer, bias_initializer: for every kernel and bias
            (PVTv2 trains from a truncated normal of std 0.02 and zero biases).

    Example:
    >>> import numpy as np
    >>> attn = SpatialReductionAttention(dim=8, num_heads=2, sr_ratio=2)
    >>> tuple(attn(np.zeros((1, 4, 4, 8), "float32")).shape)
    (1, 4, 4, 8)
    >>> tuple(attn(np.zeros((1, 16, 8), "float32"), spatial_shape=(4, 4)).shape)
    (1, 16, 8)
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        sr_ratio: int = 1,
        qkv_bias: bool = False,
        linear: bool = False,
        qk_scale: float | None = None,
        norm_epsilon: float = 1e-5,
        pool_size: int | Sequence[int] = 7,
        spatial_dims: int = 2,
        return_query: bool = False,
        data_format: str | None = None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        if self.dim < 1 or self.num_heads < 1 or self.dim % self.num_heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads}).")
        if int(sr_ratio) < 0:
            raise ValueError(f"sr_ratio must be >= 0, got {sr_ratio}.")
        if int(spatial_dims) not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        self.sr_ratio = int(sr_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.linear = bool(linear)
        self.qk_scale = None if qk_scale is None else float(qk_scale)
        self.norm_epsilon = float(norm_epsilon)
        self.spatial_dims = int(spatial_dims)
        self.pool_size = normalize_tuple(pool_size, self.spatial_dims, "pool_size")
        self.return_query = bool(return_query)
        self.data_format = standardize_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.head_dim = self.dim // self.num_heads
        self.scale = self.qk_scale or self.head_dim**-0.5
        self.norm = None
        if self.reduces:
            self.norm = LayerNorm(
                epsilon=self.norm_epsilon, data_format="channels_last", dtype=self.dtype_policy, name="norm"
            )

    @property
    def reduces(self) -> bool:
        """Whether keys and values come from a reduced token set."""
        return self.linear or self.sr_ratio > 1

    def build(self, input_shape=None):
        c = self.dim

        def kernel(name, shape):
            return self.add_weight(name=name, shape=shape, initializer=self.kernel_initializer)

        def bias(name, size):
            return self.add_weight(name=name, shape=(size,), initializer=self.bias_initializer)

        self.q_kernel = kernel("q_kernel", (c, c))
        self.q_bias = bias("q_bias", c) if self.qkv_bias else None
        self.kv_kernel = kernel("kv_kernel", (c, 2 * c))
        self.kv_bias = bias("kv_bias", 2 * c) if self.qkv_bias else None
        self.proj_kernel = kernel("proj_kernel", (c, c))
        self.proj_bias = bias("proj_bias", c)
        self.sr_kernel = self.sr_bias = None
        if self.reduces:
            k = 1 if self.linear else self.sr_ratio
            self.sr_kernel = kernel("sr_kernel", (k,) * self.spatial_dims + (c, c))
            self.sr_bias = bias("sr_bias", c)
            self.norm.build((None, None, c))

    def _check_channels(self, channels_last_shape, input_shape):
        if channels_last_shape[-1] != self.dim:
            raise ValueError(f"Expected {self.dim} channels, got input shape {tuple(input_shape)}.")

    def _tokens_and_map(self, inputs, spatial_shape):
        """``(tokens (B, N, C), channels-last map or None, spatial sizes, map input?)``."""
        rank = len(inputs.shape)
        if spatial_shape is None and rank == self.spatial_dims + 2:
            x = inputs if self.data_format == "channels_last" else ops.moveaxis(inputs, 1, -1)
            self._check_channels(x.shape, inputs.shape)
            shape = ops.shape(x)
            spatial = tuple(shape[1:-1])
            return ops.reshape(x, (shape[0], -1, self.dim)), x, spatial, True
        if rank != 3:
            raise ValueError(
                f"Expected tokens (B, N, C) or a rank-{self.spatial_dims + 2} map, got shape {inputs.shape}."
            )
        self._check_channels(inputs.shape, inputs.shape)
        if spatial_shape is None:
            if self.reduces:
                raise ValueError("Tokens need `spatial_shape` for a spatial reduction.")
            return inputs, None, None, False
        spatial = tuple(spatial_shape)
        if len(spatial) != self.spatial_dims:
            raise ValueError(f"spatial_shape {spatial} must have spatial_dims={self.spatial_dims} entries.")
        x_map = ops.reshape(inputs, (ops.shape(inputs)[0], *spatial, self.dim)) if self.reduces else None
        return inputs, x_map, spatial, False

    def _reduced_tokens(self, x_map):
        c = self.dim
        if self.linear:
            pooled = adaptive_average_pool(x_map, self.pool_size)
            reduced = ops.matmul(pooled, ops.reshape(self.sr_kernel, (c, c))) + self.sr_bias
        else:
            reduced = ops.conv(
                x_map, self.sr_kernel, strides=self.sr_ratio, padding="valid", data_format="channels_last"
            )
            reduced = reduced + self.sr_bias
        tokens = self.norm(ops.reshape(reduced, (ops.shape(reduced)[0], -1, c)))
        return ops.gelu(tokens, approximate=False) if self.linear else tokens

    def call(self, inputs, spatial_shape=None):
        tokens, x_map, spatial, map_input = self._tokens_and_map(inputs, spatial_shape)
        batch = ops.shape(tokens)[0]
        q = ops.matmul(tokens, self.q_kernel)
        if self.q_bias is not None:
            q = q + self.q_bias
        source = self._reduced_tokens(x_map) if self.reduces else tokens
        kv = ops.matmul(source, self.kv_kernel)
        if self.kv_bias is not None:
            kv = kv + self.kv_bias
        kv = ops.reshape(kv, (batch, -1, 2, self.num_heads, self.head_dim))
        heads = ops.dot_product_attention(
            ops.reshape(q, (batch, -1, self.num_heads, self.head_dim)),
            kv[:, :, 0],
            kv[:, :, 1],
            scale=self.scale,
        )
        out = ops.matmul(ops.reshape(heads, (batch, -1, self.dim)), self.proj_kernel) + self.proj_bias
        outputs = (out, q) if self.return_query else (out,)
        if map_input:
            outputs = tuple(ops.reshape(t, (batch, *spatial, self.dim)) for t in outputs)
            if self.data_format == "channels_first":
                outputs = tuple(ops.moveaxis(t, -1, 1) for t in outputs)
        return outputs if self.return_query else outputs[0]

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        return (shape, shape) if self.return_query else shape

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim,
            num_heads=self.num_heads,
            sr_ratio=self.sr_ratio,
            qkv_bias=self.qkv_bias,
            linear=self.linear,
            qk_scale=self.qk_scale,
            norm_epsilon=self.norm_epsilon,
            pool_size=list(self.pool_size),
            spatial_dims=self.spatial_dims,
            return_query=self.return_query,
            data_format=self.data_format,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """Copy PVTv2 ``Attention`` weights (keys ``{prefix}q.weight``, ...);
        returns the keys used. The layer must be built."""
        if not self.built:
            raise ValueError("Build the layer (call it once) before loading weights.")
        used: set[str] = set()
        assign_from_state(self.q_kernel, state, prefix + "q.weight", used, torch_linear_kernel)
        assign_from_state(self.kv_kernel, state, prefix + "kv.weight", used, torch_linear_kernel)
        assign_from_state(self.proj_kernel, state, prefix + "proj.weight", used, torch_linear_kernel)
        assign_from_state(self.proj_bias, state, prefix + "proj.bias", used)
        if self.qkv_bias:
            assign_from_state(self.q_bias, state, prefix + "q.bias", used)
            assign_from_state(self.kv_bias, state, prefix + "kv.bias", used)
        if self.reduces:
            assign_from_state(self.sr_kernel, state, prefix + "sr.weight", used, torch_conv_kernel)
            assign_from_state(self.sr_bias, state, prefix + "sr.bias", used)
            used |= self.norm.load_torch_state(state, prefix + "norm.")
        return used

    def macs(self, input_shape, output_shape=None, spatial_shape=None) -> int:
        """thop's count for the PyTorch module: Linear ``in x out elements``,
        the reduction's conv, LayerNorm (4 per element) and adaptive pooling
        (``(in / out + 1)`` per output element); the attention products are
        functional in PyTorch and count 0 there."""
        c = self.dim
        if spatial_shape is None:
            if len(input_shape) != self.spatial_dims + 2:
                raise ValueError("macs() of token inputs needs their spatial_shape.")
            spatial = input_shape[1:-1] if self.data_format == "channels_last" else input_shape[2:]
        else:
            spatial = spatial_shape
        spatial = [int(s) for s in spatial]
        n = math.prod(spatial)
        total = 2 * n * c * c  # q and proj
        if self.linear:
            m = math.prod(self.pool_size)
            window = math.prod(s / p for s, p in zip(spatial, self.pool_size))
            total += int((window + 1) * m * c) + m * c * c + 4 * m * c
        elif self.sr_ratio > 1:
            m = math.prod(s // self.sr_ratio for s in spatial)
            total += m * c * c * self.sr_ratio**self.spatial_dims + 4 * m * c
        else:
            m = n
        return total + m * c * 2 * c
