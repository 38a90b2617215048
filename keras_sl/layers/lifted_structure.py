"""Exact structure of lifted activations: slices that are provably equal.

A lifted image repeats one slice m times. A convolution over the lifted axis
(kernel k, stride s, PyTorch padding) maps it to a tensor whose slices differ
only where the kernel window touches the padding; instance norm, PReLU and
residual sums keep equal slices equal. So the encoder of an SL network can
store each *distinct* slice once and run on those alone.

A **lifted pattern** describes such a compact tensor: ``pattern[i]`` is the
stored slice that logical slice ``i`` equals, e.g. ``(0, 1, 1, 1, 1, 1, 1, 1)``
for the first SL-UNet encoder level (slice 0 saw the padding, slices 1-7 did
not). Patterns are static (plain tuples, known when the model is built), so
all bookkeeping below is NumPy, and the layers only gather slices.

Example:
>>> conv_output_pattern((0,) * 16, k=3, s=2, p=1)[0]
(0, 1, 1, 1, 1, 1, 1, 1)
"""

from __future__ import annotations

import functools
from typing import Sequence

import keras
import numpy as np
from keras import ops


def canonical(labels: Sequence) -> tuple[int, ...]:
    """Relabel hashable ``labels`` 0, 1, 2, ... in order of first appearance.

    >>> canonical(["b", "a", "b", "c"])
    (0, 1, 0, 2)
    """
    ids: dict = {}
    return tuple(ids.setdefault(label, len(ids)) for label in labels)


def representatives(pattern: Sequence[int]) -> tuple[int, ...]:
    """For each stored slice, the first logical slice it stands for."""
    first: dict[int, int] = {}
    for i, p in enumerate(pattern):
        first.setdefault(p, i)
    return tuple(first[p] for p in range(len(first)))


def slice_counts(pattern: Sequence[int]) -> tuple[int, ...]:
    """How many logical slices each stored slice stands for."""
    return tuple(int(c) for c in np.bincount(np.asarray(pattern, "int64")))


@functools.lru_cache(maxsize=None)
def lifted_windows(length: int, k: int, s: int, p: int, transposed: bool = False) -> tuple[tuple[int, ...], ...]:
    """For each output position, the input position each tap reads (-1: padding).

    Convolution: output ``o`` reads input ``o * s + t - p`` through tap ``t``;
    transposed convolution (PyTorch, ``output_padding = s - 1``): input ``i``
    reaches output ``o = i * s + t - p``.

    >>> lifted_windows(4, 3, 2, 1)
    ((-1, 0, 1), (1, 2, 3))
    """
    if transposed:
        out_length = (length - 1) * s + k - 2 * p + (s - 1)
    else:
        out_length = (length + 2 * p - k) // s + 1
    windows = []
    for o in range(out_length):
        if transposed:
            taps = ((o + p - t) // s if (o + p - t) % s == 0 else -1 for t in range(k))
        else:
            taps = (o * s + t - p for t in range(k))
        windows.append(tuple(i if 0 <= i < length else -1 for i in taps))
    return tuple(windows)


@functools.lru_cache(maxsize=None)
def conv_output_pattern(pattern: tuple[int, ...], k: int, s: int, p: int, transposed: bool = False):
    """Pattern of a convolution's output along the lifted axis, and its band.

    Output slice ``o`` reads the input slices of its window
    (:func:`lifted_windows`); two outputs are equal when their windows read
    the same stored slices through the same taps. Returns
    ``(out_pattern, band)`` with ``band[t, a, b] = 1`` when stored input slice
    ``a`` reaches stored output slice ``b`` through tap ``t`` (the compact
    form of the banded kernel).
    """
    windows = [
        tuple(pattern[i] if i >= 0 else -1 for i in window)
        for window in lifted_windows(len(pattern), k, s, p, transposed)
    ]
    out_pattern = canonical(windows)
    n_in, n_out = len(set(pattern)), len(set(out_pattern))
    band = np.zeros((k, n_in, n_out), "float32")
    for b, o in enumerate(representatives(out_pattern)):
        for t, a in enumerate(windows[o]):
            if a >= 0:
                band[t, a, b] = 1.0
    return out_pattern, band


@functools.lru_cache(maxsize=None)
def joint_conv_output_pattern(patterns: tuple[tuple[int, ...], ...], k: int, s: int, p: int,
                              transposed: bool = False):
    """:func:`conv_output_pattern` of a convolution over several inputs that
    are concatenated along the channels, each compact with its own pattern.

    The output slices are equal when they are equal for every input, so the
    output pattern merges the inputs' output patterns. Returns
    ``(out_pattern, bands)``: one band per input, mapping its stored slices to
    the merged stored output slices.

    >>> joint_conv_output_pattern(((0, 1, 1, 1), (0, 1, 2, 3)), 3, 1, 1)[0]
    (0, 1, 2, 3)
    """
    singles = [conv_output_pattern(pattern, k, s, p, transposed) for pattern in patterns]
    merged = canonical(zip(*(out for out, _ in singles)))
    reps = representatives(merged)
    bands = tuple(band[:, :, [out[r] for r in reps]] for out, band in singles)
    return merged, bands


def merge_patterns(first: Sequence[int], second: Sequence[int]):
    """Common pattern of two tensors that are combined slice by slice.

    Returns ``(pattern, take_first, take_second)``: gathering stored slices
    ``take_first`` of the first tensor (and ``take_second`` of the second)
    puts both in ``pattern``. ``take_*`` is None where nothing moves.
    """
    if len(first) != len(second):
        raise ValueError(f"Lifted lengths differ: {len(first)} and {len(second)}.")
    merged = canonical(zip(first, second))
    reps = representatives(merged)
    take_first = tuple(first[i] for i in reps)
    take_second = tuple(second[i] for i in reps)
    identity = tuple(range(len(reps)))
    return (
        merged,
        None if take_first == identity and len(set(first)) == len(reps) else take_first,
        None if take_second == identity and len(set(second)) == len(reps) else take_second,
    )


@keras.saving.register_keras_serializable(package="keras_sl")
class LiftedSlices(keras.layers.Layer):
    """Gather slices along the lifted axis: ``take(x, indices, axis)``.

    Compacts a lifted image to its one distinct slice (``indices=[0]``) and
    expands a compact activation back to all its logical slices
    (``indices=pattern``) where the encoder meets the decoder. The gradient
    sums over repeated slices, so training stays exact.

    Example:
    >>> import numpy as np
    >>> x = np.arange(6, dtype="float32").reshape(1, 2, 3)
    >>> keras.ops.convert_to_numpy(LiftedSlices([0, 1, 1], axis=1)(x))[0, :, 0]
    array([0., 3., 3.], dtype=float32)
    """

    def __init__(self, indices: Sequence[int], axis: int, **kwargs):
        super().__init__(**kwargs)
        self.indices = tuple(int(i) for i in indices)
        self.axis = int(axis)
        if not self.indices or min(self.indices) < 0:
            raise ValueError(f"indices must be non-empty and non-negative, got {self.indices}.")

    def build(self, input_shape):
        length = input_shape[self.axis]
        if length is not None and max(self.indices) >= length:
            raise ValueError(
                f"{self.name}: indices {self.indices} exceed the input's length {length} "
                f"along axis {self.axis} (input shape {input_shape})."
            )

    def call(self, inputs):
        if self.indices == tuple(range(inputs.shape[self.axis] or -1)):
            return inputs
        if len(self.indices) == 1:  # a slice, cheaper than a gather
            index = [slice(None)] * len(inputs.shape)
            index[self.axis] = slice(self.indices[0], self.indices[0] + 1)
            return inputs[tuple(index)]
        return ops.take(inputs, np.asarray(self.indices, "int32"), axis=self.axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[self.axis] = len(self.indices)
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(indices=list(self.indices), axis=self.axis)
        return config
