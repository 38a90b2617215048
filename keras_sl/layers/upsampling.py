"""Resampling with ``torch.nn.functional.interpolate``'s exact semantics.

Nearest (PyTorch's legacy index rule and ``"nearest-exact"``) and
(bi/tri)linear interpolation, with both ``align_corners`` conventions, for 1-,
2- and 3-D inputs in either data format. Each spatial axis is resampled on its
own: a gather of source indices (nearest), or two gathers blended with
precomputed weights (linear, last axis first as PyTorch nests them). Indices and
weights follow PyTorch's CPU kernels, in float32 like they do:

* ``scale_factor``: output size ``floor(in * scale_factor)`` (in double); the
  source position of output ``i`` uses ``1 / scale_factor``, not ``in / out``,
  unless ``recompute_scale_factor=True``. ``size``: it uses ``in / out``.
* nearest: ``src = min(floor(i * scale), in - 1)``; ``"nearest-exact"``:
  ``min(floor((i + 0.5) * scale), in - 1)``. PyTorch's 2-D kernel alone copies
  when ``out == in`` and halves the index when ``out == 2 * in``, whatever the
  scale factor; the 1-D and 3-D kernels do not, and neither does this layer at
  those ranks.
* linear, ``align_corners=False``: ``src = max(scale * (i + 0.5) - 0.5, 0)``;
  ``align_corners=True``: ``src = i * (in - 1) / (out - 1)``; an axis whose
  size does not change is copied.

With static spatial sizes the indices and weights are NumPy constants computed
once per shape; with unknown sizes (TensorFlow graphs of ``None``-sized inputs)
the same arithmetic runs in ``keras.ops`` (the output size of a scale factor in
float64 there; JAX shapes are always static). Matches PyTorch on CPU; CUDA's
nearest kernels skip the 2-D shortcuts above.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_sl.utils.layout import spatial_axes, standardize_data_format

_LINEAR_MODES = ("linear", "bilinear", "trilinear")
_MODES = ("nearest", "nearest-exact") + _LINEAR_MODES


def _per_axis(value, rank: int, name: str) -> tuple | None:
    """``value`` repeated to ``rank`` entries (a number), or checked (a sequence)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return (value,) * rank
    value = tuple(value)
    if len(value) != rank:
        raise ValueError(f"{name} has {len(value)} entries for an input with {rank} spatial axes: {value}.")
    return value


def _config_value(value, kind):
    """A number as given, a sequence as a list of ``kind`` (JSON-friendly)."""
    return value if value is None or isinstance(value, (int, float)) else [kind(v) for v in value]


def _output_length(in_size: int, size: int | None, scale: float | None) -> int:
    """PyTorch's output length: ``size``, or ``floor(in * scale)`` in double."""
    out = int(size) if size is not None else int(math.floor(in_size * float(scale)))
    if out < 1:
        raise ValueError(f"Resampling an axis of length {in_size} gives length {out}: it must be >= 1.")
    return out


@functools.lru_cache(maxsize=512)
def _static_plan(in_size: int, out_size: int, scale: float | None, mode: str, align_corners: bool, shortcuts: bool):
    """NumPy indices (and weights) resampling one axis like PyTorch's CPU kernel.

    Returns ``None`` (the axis is copied), ``("repeat", k)``, ``("gather", idx)``
    or ``("linear", i0, i1, w0, w1)``. ``scale`` is the user's scale factor
    (``None``: use ``in / out``); float32 arithmetic as in PyTorch.
    """
    dst = np.arange(out_size)
    if mode in ("nearest", "nearest-exact"):
        if shortcuts and out_size == in_size:
            return None
        if shortcuts and out_size == 2 * in_size:
            idx = dst // 2
        else:
            ratio = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
            position = dst.astype(np.float32) + np.float32(0.5 if mode == "nearest-exact" else 0.0)
            idx = np.minimum(np.floor(position * ratio).astype(np.int64), in_size - 1)
        if out_size == in_size and np.array_equal(idx, dst):
            return None
        if out_size % in_size == 0 and np.array_equal(idx, dst // (out_size // in_size)):
            return ("repeat", out_size // in_size)
        return ("gather", idx.astype(np.int32))
    if out_size == in_size:
        return None
    position = dst.astype(np.float32)
    if align_corners:
        ratio = np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0.0)
        source = ratio * position
    else:
        ratio = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
        source = np.maximum(ratio * (position + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    w1 = np.clip(source - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    return ("linear", i0.astype(np.int32), i1.astype(np.int32), np.float32(1.0) - w1, w1)


def _dynamic_plan(
    in_size, size: int | None, scale: float | None, recompute: bool, mode: str, align_corners: bool, shortcuts: bool
):
    """:func:`_static_plan` in ``keras.ops`` for an axis whose length is a tensor
    (output ``size``, or ``floor(in * scale)`` in double as in PyTorch).

    Returns ``("gather", idx)`` or ``("linear", i0, i1, w0, w1)``.
    """
    in_size = ops.cast(in_size, "int32")
    if size is not None:
        out_size = ops.cast(size, "int32")
    else:
        out_size = ops.cast(ops.floor(ops.cast(in_size, "float64") * float(scale)), "int32")
    if size is not None or recompute:
        scale = None  # positions map with in / out
    dst = ops.arange(out_size, dtype="int32")
    position = ops.cast(dst, "float32")
    in_f, out_f = ops.cast(in_size, "float32"), ops.cast(out_size, "float32")
    last = in_size - 1
    if mode in ("nearest", "nearest-exact"):
        ratio = ops.cast(1.0 / scale, "float32") if scale else in_f / out_f
        if mode == "nearest-exact":
            position = position + 0.5
        idx = ops.minimum(ops.cast(ops.floor(position * ratio), "int32"), last)
        if shortcuts:
            idx = ops.where(out_size == in_size, dst, ops.where(out_size == 2 * in_size, dst // 2, idx))
        return ("gather", idx)
    if align_corners:
        ratio = ops.where(out_size > 1, (in_f - 1.0) / ops.maximum(out_f - 1.0, 1.0), 0.0)
        source = ratio * position
    else:
        ratio = ops.cast(1.0 / scale, "float32") if scale else in_f / out_f
        source = ops.maximum(ratio * (position + 0.5) - 0.5, 0.0)
    i0 = ops.minimum(ops.cast(ops.floor(source), "int32"), last)
    w1 = ops.clip(source - ops.cast(i0, "float32"), 0.0, 1.0)
    i1 = ops.where(i0 < last, i0 + 1, i0)
    same = out_size == in_size
    i0, i1 = ops.where(same, dst, i0), ops.where(same, dst, i1)
    w1 = ops.where(same, 0.0, w1)
    return ("linear", i0, i1, 1.0 - w1, w1)


def _apply_plan(x, axis: int, plan):
    if plan is None:
        return x
    if plan[0] == "repeat":
        return ops.repeat(x, plan[1], axis=axis)
    if plan[0] == "gather":
        return ops.take(x, plan[1], axis=axis)
    _, i0, i1, w0, w1 = plan
    shape = [1] * len(x.shape)
    shape[axis] = -1
    w0 = ops.reshape(ops.cast(w0, x.dtype), shape)
    w1 = ops.reshape(ops.cast(w1, x.dtype), shape)
    return ops.take(x, i0, axis=axis) * w0 + ops.take(x, i1, axis=axis) * w1


def _check_arguments(size, scale_factor, mode: str, align_corners: bool) -> None:
    if (size is None) == (scale_factor is None):
        raise ValueError("Give exactly one of `size` and `scale_factor`.")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    if align_corners and mode not in _LINEAR_MODES:
        raise ValueError(f"align_corners=True only applies to linear modes, not {mode!r}.")


def interpolate(
    x,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool = False,
    recompute_scale_factor: bool = False,
    data_format: str | None = None,
):
    """``torch.nn.functional.interpolate`` for ``(B, *spatial, C)`` tensors.

    ``mode``: ``"nearest"``, ``"nearest-exact"``, or ``"linear"`` /
    ``"bilinear"`` / ``"trilinear"`` (all three mean multilinear over every
    spatial axis, so a 2-D decoder's ``"bilinear"`` is trilinear when the
    decoder is built at rank 3). ``size`` / ``scale_factor``: one number for
    every spatial axis, or one per axis. See the module docstring for the
    index rules.

    Example:
    >>> import numpy as np
    >>> x = np.arange(3, dtype="float32").reshape(1, 3, 1)
    >>> keras.ops.convert_to_numpy(interpolate(x, size=5, mode="linear", align_corners=True))[0, :, 0]
    array([0. , 0.5, 1. , 1.5, 2. ], dtype=float32)
    """
    _check_arguments(size, scale_factor, mode, align_corners)
    data_format = standardize_data_format(data_format)
    rank = len(x.shape) - 2
    if rank < 1:
        raise ValueError(f"interpolate needs a (batch, *spatial, channels) tensor, got shape {x.shape}.")
    sizes = _per_axis(size, rank, "size")
    scales = _per_axis(scale_factor, rank, "scale_factor")
    shortcuts = rank == 2 and mode == "nearest"  # PyTorch's 2-D nearest kernel only
    plans = []
    for i, axis in enumerate(spatial_axes(rank, data_format)):
        out = None if sizes is None else sizes[i]
        scale = None if scales is None else float(scales[i])
        in_size = x.shape[axis]
        if in_size is not None and (out is None or isinstance(out, (int, np.integer))):
            length = _output_length(in_size, out, scale)
            mapping_scale = None if recompute_scale_factor else scale
            plan = _static_plan(in_size, length, mapping_scale, mode, bool(align_corners), shortcuts)
        else:
            args = (out, scale, bool(recompute_scale_factor), mode, bool(align_corners), shortcuts)
            plan = _dynamic_plan(ops.shape(x)[axis], *args)
        plans.append((axis, plan))
    for axis, plan in reversed(plans):
        x = _apply_plan(x, axis, plan)
    return x


@keras.saving.register_keras_serializable(package="keras_sl")
class Upsample(keras.layers.Layer):
    """``torch.nn.Upsample`` for any rank: nearest or (bi/tri)linear resampling.

    Resizes every spatial axis of ``(B, *spatial, C)`` (``channels_last``) or
    ``(B, C, *spatial)`` tensors by ``scale_factor`` or to ``size`` with
    :func:`interpolate`, i.e. exactly ``torch.nn.functional.interpolate``
    (``align_corners`` both ways, non-integer ratios, downsampling). The rank
    comes from the input, so the same layer serves a 2-D decoder and its SL
    twin at rank 3; ``"bilinear"`` then interpolates trilinearly.

    Args:
        scale_factor: a number, or one per spatial axis.
        size: output spatial size, an int or one per spatial axis (give
            exactly one of ``size`` and ``scale_factor``).
        mode: ``"nearest"`` (PyTorch's default index rule
            ``floor(dst * in / out)``, ``1 / scale_factor`` for ``in / out``
            when a scale factor is given), ``"nearest-exact"``, ``"linear"``,
            ``"bilinear"`` or ``"trilinear"``.
        align_corners: PyTorch's flag, for the linear modes.
        recompute_scale_factor: PyTorch's flag: map positions with
            ``in / out`` instead of ``1 / scale_factor``.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        count_macs: thop counts ``nn.Upsample`` modules but not
            ``F.interpolate`` calls; ``False`` ports such a call (0 MACs in
            :func:`keras_sl.profile`).

    Example:
    >>> import numpy as np
    >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
    >>> y = Upsample(scale_factor=2, mode="bilinear")(x)
    >>> keras.ops.convert_to_numpy(y)[0, :, :, 0]
    array([[0.  , 0.25, 0.75, 1.  ],
           [0.5 , 0.75, 1.25, 1.5 ],
           [1.5 , 1.75, 2.25, 2.5 ],
           [2.  , 2.25, 2.75, 3.  ]], dtype=float32)
    """

    def __init__(
        self,
        scale_factor: float | Sequence[float] | None = None,
        size: int | Sequence[int] | None = None,
        mode: str = "nearest",
        align_corners: bool = False,
        recompute_scale_factor: bool = False,
        data_format: str | None = None,
        count_macs: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_arguments(size, scale_factor, mode, align_corners)
        self.count_macs = bool(count_macs)
        self.scale_factor = _config_value(scale_factor, float)
        self.size = _config_value(size, int)
        self.mode = mode
        self.align_corners = bool(align_corners)
        self.recompute_scale_factor = bool(recompute_scale_factor)
        self.data_format = standardize_data_format(data_format)

    def call(self, inputs):
        return interpolate(
            inputs,
            size=self.size,
            scale_factor=self.scale_factor,
            mode=self.mode,
            align_corners=self.align_corners,
            recompute_scale_factor=self.recompute_scale_factor,
            data_format=self.data_format,
        )

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        rank = len(shape) - 2
        sizes = _per_axis(self.size, rank, "size")
        scales = _per_axis(self.scale_factor, rank, "scale_factor")
        for i, axis in enumerate(spatial_axes(rank, self.data_format)):
            if sizes is not None:
                shape[axis] = int(sizes[i])
            elif shape[axis] is not None:
                shape[axis] = _output_length(shape[axis], None, scales[i])
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            scale_factor=self.scale_factor,
            size=self.size,
            mode=self.mode,
            align_corners=self.align_corners,
            recompute_scale_factor=self.recompute_scale_factor,
            data_format=self.data_format,
            count_macs=self.count_macs,
        )
        return config

    def macs(self, input_shape, output_shape) -> int:
        """thop's count for ``nn.Upsample`` (``F.interpolate`` calls count 0
        there): per output element 1 (nearest), 5 / 11 / 31 (linear at rank
        1 / 2 / 3)."""
        if not self.count_macs:
            return 0
        rank = len(output_shape) - 2
        per_element = 1 if self.mode.startswith("nearest") else {1: 5, 2: 11, 3: 31}.get(rank, 0)
        return per_element * int(math.prod(output_shape[1:]))


@keras.saving.register_keras_serializable(package="keras_sl")
class UpsampleLike(Upsample):
    """Resample ``x`` to the spatial size of a reference tensor: ``[x, ref] -> x'``.

    A decoder that upsamples each stage to its skip's size instead of by a
    fixed factor is rank-generic in the strongest sense: the same code serves
    its 2-D form and its SL twin at rank 3 whether the lifted axis grows
    between stages (lifted depths ``[8, 4, 2, 1]``) or not (one depth for every
    level), and odd sizes need no special case. For ``out == 2 * in``, PyTorch
    maps positions identically with ``scale_factor=2`` and with
    ``size=2 * in``, so ports of ``nn.Upsample(scale_factor=2)`` stay exact.
    Counts as ``nn.Upsample`` under thop's rules.

    Args:
        mode, align_corners, data_format, count_macs: as :class:`Upsample`.

    Example:
    >>> import numpy as np
    >>> up = UpsampleLike(mode="bilinear")
    >>> tuple(up([np.zeros((1, 2, 3, 4), "float32"), np.zeros((1, 4, 6, 8), "float32")]).shape)
    (1, 4, 6, 4)
    """

    def __init__(self, mode: str = "nearest", align_corners: bool = False, data_format: str | None = None,
                 count_macs: bool = True, **kwargs):
        kwargs.pop("scale_factor", None)
        kwargs.pop("size", None)
        kwargs.pop("recompute_scale_factor", None)
        super().__init__(scale_factor=1, mode=mode, align_corners=align_corners, data_format=data_format,
                         count_macs=count_macs, **kwargs)

    def call(self, inputs):
        x, reference = inputs
        axes = spatial_axes(len(x.shape) - 2, self.data_format)
        static = [reference.shape[a] for a in axes]
        if all(s is not None for s in static):
            size = [int(s) for s in static]
        else:
            shape = ops.shape(reference)
            size = [shape[a] for a in axes]
        return interpolate(x, size=size, mode=self.mode, align_corners=self.align_corners,
                           data_format=self.data_format)

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        shape = list(x_shape)
        for a in spatial_axes(len(shape) - 2, self.data_format):
            shape[a] = ref_shape[a]
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        for key in ("scale_factor", "size", "recompute_scale_factor"):
            config.pop(key, None)
        return config
