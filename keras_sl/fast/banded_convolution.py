"""Lifted convolutions with the lifted axis folded into the channels (op
``"convolution"`` of :class:`keras_sl.layers.Convolution`).

The lifted axis (the first logical spatial axis of an SL network) is short
(m = 8-32 slices). Folding it into the channels turns the kernel into a
block-banded one over (slice, channel) pairs, built from the same Conv3D
weights by a constant 0/1 band, so one dense (rank-1)-D convolution does the
work: XLA's CPU Conv3D is 10-100x slower than its 2-D convolution, and
oneDNN runs the dense folded 2-D convolution faster than the 8-channel
Conv3D (``benchmarks/paths.md``). Three paths, exact in outputs and
gradients:

- ``broadcast_slice``: an input constant along the lifted axis (a lifted
  image) is read once; each output position sums the taps that land inside.
- ``compact_banded``: compact inputs (``lifted_pattern``/``input_patterns``,
  equal slices stored once) convolve with the band summed over equal slices;
  several inputs are folded one by one into one convolution.
- ``banded``: full-length inputs, on CPU while the folded channels stay few.
"""

from __future__ import annotations

import functools

import numpy as np
from keras import ops

from keras_sl.fast.dispatch import register
from keras_sl.layers.convolution import conv, conv_transpose
from keras_sl.layers.lifted_structure import conv_output_pattern, lifted_windows

# Folding the lifted axis into channels multiplies the FLOPs by about
# length / kernel_size; past this many folded input channels the dense
# banded kernel costs more than XLA's slow Conv3D saves.
MAX_BANDED_CHANNELS = 256


@functools.lru_cache(maxsize=None)  # a constant per layer shape: built once
def band(length: int, out_length: int, k: int, s: int, p: int, transposed: bool) -> np.ndarray:
    """0/1 array ``band[tap, i, o]``: input position i reaches output o
    (:func:`keras_sl.layers.lifted_structure.lifted_windows`)."""
    windows = lifted_windows(length, k, s, p, transposed)
    if len(windows) != out_length:
        raise ValueError(f"A lifted length of {length} gives {len(windows)} outputs, not {out_length}.")
    result = np.zeros((k, length, out_length), "float32")
    for o, window in enumerate(windows):
        for tap, i in enumerate(window):
            if i >= 0:
                result[tap, i, o] = 1.0
    return result


def _plain(layer) -> bool:
    """The band algebra covers ungrouped, undilated convolutions."""
    return layer.groups == 1 and all(d == 1 for d in layer.dilation)


def folds(layer) -> bool:
    """Whether ``layer``'s convolution runs folded here (a path of this module)."""
    from keras_sl.fast import dispatch

    path = dispatch.resolve("convolution", layer, None, None, None, prefer=layer.execution_request)
    return path is not None and path.name in ("broadcast_slice", "compact_banded", "banded")


def fold(layer, x, length: int, channels: int):
    """(B, ..., lifted, ..., C) -> (rank-1)-D tensor with (lifted, C) channels
    (a free reshape where the layout stores the lifted axis next to the channels)."""
    channels_last = layer.data_format == "channels_last"
    fold_at = layer.rank if channels_last else 2
    if layer.lifted_axis != fold_at:
        x = ops.moveaxis(x, layer.lifted_axis, fold_at)
    shape = ops.shape(x)
    if channels_last:
        return ops.reshape(x, (-1, *shape[1 : layer.rank], length * channels))
    return ops.reshape(x, (-1, channels * length, *shape[3:]))


def unfold(layer, y, out_length: int, filters: int):
    """Folded (rank-1)-D output -> the layer's layout: split the (position,
    filter) channels and put the lifted axis where it lives."""
    shape = ops.shape(y)
    if layer.data_format == "channels_last":  # (B, *plane, m*F) -> (B, *plane, m, F)
        y = ops.reshape(y, (-1, *shape[1 : layer.rank], out_length, filters))
        folded_at = layer.rank
    else:  # (B, F*m, *plane) -> (B, F, m, *plane)
        y = ops.reshape(y, (-1, filters, out_length, *shape[2:]))
        folded_at = 2
    return y if folded_at == layer.lifted_axis else ops.moveaxis(y, folded_at, layer.lifted_axis)


def bands(layer) -> tuple[int, tuple]:
    """Stored output length and one band per input, ``band[tap, i, o]``."""
    k, s, p = layer.kernel_size[0], layer.strides[0], layer.pads[0]
    if layer.input_patterns is not None:
        pattern, per_input = layer.joint_output_pattern()
        return len(set(pattern)), per_input
    if layer.lifted_pattern is not None:  # compact in and out
        pattern, compact_band = conv_output_pattern(layer.lifted_pattern, k, s, p, layer.transposed)
        return len(set(pattern)), (compact_band,)
    length = int(layer.lifted_length)
    out_length = layer.output_length(length, 0)
    return out_length, (band(length, out_length, k, s, p, layer.transposed),)


def fold_inputs(layer, inputs, kernel, filters: int):
    """``(folded input, block-banded kernel, stored output length)``: the
    (rank-1)-D convolution that computes ``layer``'s output, folded."""
    out_length, per_input = bands(layer)
    if layer.input_patterns is None:
        inputs, part_channels = [inputs], (layer.in_channels,)
    else:
        part_channels = layer.part_channels
    channels_last = layer.data_format == "channels_last"
    dtype = inputs[0].dtype
    kernel = ops.cast(kernel, dtype)
    plane = "hw"[: layer.rank - 1]
    # band[k, i, o]: input position i feeds output position o through tap k.
    if layer.transposed:  # kernel (..., out, in) -> folded (..., out*, in*)
        order = "oaib" if channels_last else "aobi"
    else:  # kernel (..., in, out) -> folded (..., in*, out*)
        order = "iaob" if channels_last else "aibo"
    spec = f"kio,k{plane}ab->{plane}{order}"
    folded, kernels, offset = [], [], 0
    for x, part_band, channels in zip(inputs, per_input, part_channels):
        length = part_band.shape[1]
        folded.append(fold(layer, x, length, channels))
        part = kernel[..., offset : offset + channels] if layer.transposed else \
            kernel[..., offset : offset + channels, :]
        offset += channels
        big = ops.einsum(spec, ops.cast(part_band, dtype), part)
        shape = (out_length * filters, length * channels) if layer.transposed else \
            (length * channels, out_length * filters)
        kernels.append(ops.reshape(big, (*layer.kernel_size[1:], *shape)))
    if len(folded) == 1:
        return folded[0], kernels[0], out_length
    return (ops.concatenate(folded, axis=-1 if channels_last else 1),
            ops.concatenate(kernels, axis=-1 if layer.transposed else -2), out_length)


def _applies_broadcast(layer, *args) -> bool:
    return layer.uses_broadcast_input and _plain(layer)


def _applies_compact(layer, *args) -> bool:
    return layer.compact and _plain(layer)


def _applies_banded(layer, *args) -> bool:
    return layer.rank > 1 and bool(layer.lifted_length) and layer.strategy != "native" and _plain(layer)


def _pays_banded(layer, *args) -> bool:
    return layer.rank == 3 and layer.lifted_length * layer.in_channels <= MAX_BANDED_CHANNELS


@register("convolution", "broadcast_slice", applies=_applies_broadcast,
          summary="A lifted image (broadcast_input) is read once: one (rank-1)-D convolution with the taps "
                  "summed per output position, m times fewer FLOPs.")
def broadcast_slice(layer, x, kernel, filters: int):
    """Output position ``o`` sees the one slice through the taps that land
    inside the input: one (rank-1)-D convolution whose output channels are
    (position, filter) pairs."""
    length = int(layer.lifted_length)
    k, s, p = layer.kernel_size[0], layer.strides[0], layer.pads[0]
    out_length = layer.output_length(length, 0)
    valid = band(length, out_length, k, s, p, False).sum(axis=1)  # (k, out_length)
    index = [slice(None)] * (layer.rank + 2)
    index[layer.lifted_axis] = 0
    image = x[tuple(index)]
    plane = "hw"[: layer.rank - 1]
    spec = f"ko,k{plane}ab->{plane}a" + ("ob" if layer.data_format == "channels_last" else "bo")
    kernel = ops.einsum(spec, ops.cast(valid, x.dtype), ops.cast(kernel, x.dtype))
    kernel = ops.reshape(kernel, (*layer.kernel_size[1:], layer.in_channels, out_length * filters))
    y = conv(image, kernel, layer.strides[1:], layer.dilation[1:], 1, layer.data_format)
    return unfold(layer, y, out_length, filters)


def banded(layer, inputs, kernel, filters: int):
    """The lifted axis folded into the channels: one (rank-1)-D convolution
    with a block-banded kernel (several inputs: one folded concatenation)."""
    folded, big, out_length = fold_inputs(layer, inputs, kernel, filters)
    fn = conv_transpose if layer.transposed else conv
    y = fn(folded, big, layer.strides[1:], layer.dilation[1:], 1, layer.data_format)
    return unfold(layer, y, out_length, filters)


register("convolution", "compact_banded", applies=_applies_compact,
         summary="Compact lifted inputs (equal slices stored once) convolve with the band summed over equal "
                 "slices; skips are folded, not expanded or concatenated (SL-UNet 5L/1Res inference "
                 "0.082 -> 0.063 s TF, 0.109 -> 0.082 s JAX, 0.117 -> 0.093 s torch).")(banded)
register("convolution", "banded", devices=("cpu",), applies=_applies_banded, pays=_pays_banded,
         summary="Full-length lifted inputs folded into the channels on CPU (XLA's CPU Conv3D is 10-100x "
                 "slower than its 2-D convolution; oneDNN runs the folded one faster too).")(banded)
