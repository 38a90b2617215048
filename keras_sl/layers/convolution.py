"""Rank-generic convolution with PyTorch/MONAI padding semantics (keras.ops reference).

Faster exact execution (banded and compact lifted convolutions, transposed
convolutions by phases, native memory layouts, grouped kernels, ...) lives
in :mod:`keras_sl.fast`: the functions and methods here hand each call to
:func:`keras_sl.fast.dispatch.run` with their reference.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_sl.fast import dispatch
from keras_sl.layers.torch_weights import assign_from_state, to_numpy, torch_conv_kernel, torch_linear_kernel
from keras_sl.layers.lifted_structure import canonical, conv_output_pattern, joint_conv_output_pattern, representatives
from keras_sl.utils.layout import normalize_tuple, standardize_data_format

# PyTorch's default for nn.ConvNd / nn.ConvTransposeNd (kaiming_uniform, a=sqrt(5)),
# so that a keras_sl UNet starts training from the same distribution as MONAI's.
TORCH_DEFAULT_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}

#: ``Convolution(strategy=...)``: ``"auto"`` (the fastest registered path),
#: ``"native"`` (the reference along the lifted axis), ``"banded"``.
STRATEGIES = ("auto", "native", "banded")

# What two convolutions must share to run as one (Convolution.call_jointly).
_JOINT_ATTRIBUTES = (
    "rank", "kernel_size", "strides", "dilation", "groups", "transposed", "data_format", "strategy",
    "lifted_axis_last", "broadcast_input", "lifted_pattern", "input_patterns", "in_channels", "lifted_length",
)


def torch_padding(kernel_size: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """PyTorch/MONAI "same" padding per axis: ``dilation * (k - 1) // 2``."""
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel_size, dilation))


def pad_spatial(x, pads: Sequence[int], data_format: str):
    """Zero-pad each spatial axis by ``pads[i]`` on both sides."""
    first = 1 if data_format == "channels_last" else 2
    widths = [(0, 0)] * (len(pads) + 2)
    for i, p in enumerate(pads):
        widths[first + i] = (p, p)
    return ops.pad(x, widths)


def keras_conv(x, kernel, *, strides, padding: str, dilation, data_format: str, transposed: bool = False):
    """One ``keras.ops.conv`` (or ``conv_transpose``) call; op ``"keras_conv"``."""
    return dispatch.run("keras_conv", _keras_conv, x, kernel, strides=strides, padding=padding,
                        dilation=dilation, data_format=data_format, transposed=transposed)


def _keras_conv(x, kernel, *, strides, padding, dilation, data_format, transposed=False):
    op = ops.conv_transpose if transposed else ops.conv
    return op(x, kernel, strides=strides, padding=padding, data_format=data_format, dilation_rate=dilation)


def conv(x, kernel, strides: tuple, dilation: tuple, groups: int, data_format: str, prefer: str | None = None):
    """``torch.nn.functional.convNd(padding=dilation * (k - 1) // 2)`` without bias; op ``"conv"``.

    ``kernel`` is ``(*kernel_size, in_channels // groups, filters)``; ``prefer``:
    a path of :mod:`keras_sl.fast` to take where it applies.

    >>> import numpy as np
    >>> x, depthwise = np.ones((1, 9, 9, 4), "float32"), np.ones((3, 3, 1, 4), "float32")
    >>> tuple(conv(x, depthwise, (2, 2), (2, 2), 4, "channels_last").shape)
    (1, 5, 5, 4)
    """
    return dispatch.run("conv", _conv, x, kernel, strides, dilation, groups, data_format, prefer=prefer)


def _conv(x, kernel, strides, dilation, groups, data_format):
    rank = len(strides)
    if all(s == 1 for s in strides):  # "same" pads d(k-1)/2 on both sides (odd k)
        return keras_conv(x, kernel, strides=strides, padding="same", dilation=dilation, data_format=data_format)
    if any(d != 1 for d in dilation):
        # Keras' TensorFlow backend takes no strides with dilation: subsample
        # the stride-1 convolution (its positions 0, s, 2s, ...).
        y = conv(x, kernel, (1,) * rank, dilation, groups, data_format)
        first = 1 if data_format == "channels_last" else 2
        index = [slice(None)] * (rank + 2)
        for i, s in enumerate(strides):
            index[first + i] = slice(None, None, s)
        return y[tuple(index)]
    x = pad_spatial(x, torch_padding(kernel.shape[:rank], dilation), data_format)
    return keras_conv(x, kernel, strides=strides, padding="valid", dilation=dilation, data_format=data_format)


def conv_transpose(x, kernel, strides: tuple, dilation: tuple, groups: int, data_format: str):
    """``torch.nn.functional.conv_transposeNd(padding=dilation * (k - 1) // 2,
    output_padding=stride - 1)`` without bias (``H -> H * s``); op ``"conv_transpose"``.

    ``kernel`` is ``(*kernel_size, filters // groups, in_channels)``.

    >>> import numpy as np
    >>> x, kernel = np.ones((1, 5, 6, 4), "float32"), np.ones((3, 3, 3, 4), "float32")
    >>> tuple(conv_transpose(x, kernel, (2, 2), (1, 1), 2, "channels_last").shape)
    (1, 10, 12, 6)
    """
    return dispatch.run("conv_transpose", _conv_transpose, x, kernel, strides, dilation, groups, data_format)


def _conv_transpose(x, kernel, strides, dilation, groups, data_format):
    if groups > 1:  # keras.ops.conv_transpose has no groups: one call per group
        axis = -1 if data_format == "channels_last" else 1
        parts = zip(ops.split(x, groups, axis=axis), ops.split(kernel, groups, axis=-1))
        return ops.concatenate([conv_transpose(xg, kg, strides, dilation, 1, data_format) for xg, kg in parts],
                               axis=axis)
    y = keras_conv(x, kernel, strides=strides, padding="valid", dilation=dilation, data_format=data_format,
                   transposed=True)
    return crop_transposed(y, kernel.shape[: len(strides)], strides, dilation, data_format)


def crop_transposed(y, kernel_size, strides, dilation, data_format):
    """Keras' "valid" transposed output -> PyTorch's alignment.

    Keras returns ``(L - 1) * s + max(k', s)`` elements per axis
    (``k' = dilation * (k - 1) + 1``); PyTorch with ``padding=p``,
    ``output_padding=s-1`` keeps ``L * s`` of them from ``p`` on, zeros
    past the end.
    """
    rank = len(kernel_size)
    first = 1 if data_format == "channels_last" else 2
    slices = [slice(None)] * (rank + 2)
    widths = [(0, 0)] * (rank + 2)
    for i, (k, s, d) in enumerate(zip(kernel_size, strides, dilation)):
        p = d * (k - 1) // 2
        behind = max(d * (k - 1) + 1 - s, 0) - p  # >0: crop behind; <0: zeros to append
        slices[first + i] = slice(p, -behind if behind > 0 else None)
        widths[first + i] = (0, max(0, -behind))
    y = y[tuple(slices)]
    return ops.pad(y, widths) if any(w[1] for w in widths) else y


def patterns_config(patterns) -> list | None:
    """``input_patterns`` as JSON-friendly lists (for ``get_config``)."""
    return None if patterns is None else [None if p is None else list(p) for p in patterns]


def _checked_pattern(pattern, what: str) -> tuple[int, ...] | None:
    """``pattern`` as a tuple, which must already be canonical."""
    if pattern is None:
        return None
    checked = canonical(pattern)
    if tuple(int(i) for i in pattern) != checked:
        raise ValueError(
            f"{what} must number stored slices 0, 1, ... in order of first appearance, got "
            f"{tuple(pattern)}; use {checked} (keras_sl.layers.lifted_structure.canonical)."
        )
    return checked


def _cast(x, dtype):
    same = keras.backend.standardize_dtype(x.dtype) == keras.backend.standardize_dtype(dtype)
    return x if same else ops.cast(x, dtype)


@keras.saving.register_keras_serializable(package="keras_sl")
class Convolution(keras.layers.Layer):
    """N-D convolution (or transposed convolution) that pads like PyTorch.

    Keras' ``padding="same"`` pads strided convolutions on the right only;
    PyTorch pads ``dilation * (k - 1) // 2`` on both sides. This layer
    computes ``torch.nn.ConvNd(padding=d*(k-1)//2, dilation=d, groups=g)``
    and ``torch.nn.ConvTransposeNd(padding=d*(k-1)//2, output_padding=s-1,
    dilation=d, groups=g)``, so MONAI weights load unchanged and sizes
    follow MONAI (``H -> H / s`` down, ``H -> H * s`` up).

    The kernel is stored in Keras layout: ``(*kernel_size, in / groups, out)``
    for a convolution, ``(*kernel_size, out / groups, in)`` for a transposed
    one.

    Args:
        rank: number of spatial dimensions (1, 2 or 3).
        filters: output channels.
        kernel_size: int or tuple of ``rank`` odd ints.
        strides: int or tuple of ``rank`` ints.
        transposed: build a transposed (up-sampling) convolution.
        use_bias: add a bias.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        strategy: how the first spatial axis (the lifted one in SL models)
            is convolved; every choice gives the same outputs and gradients
            from the same weights. ``"native"``: the reference (the
            backend's N-D convolution). ``"banded"``: that axis folded into
            the channels (:mod:`keras_sl.fast.banded_convolution`).
            ``"auto"``: what :mod:`keras_sl.fast` picks for the backend and
            device (saved as ``"auto"``).
        lifted_axis_last: the input stores its first logical spatial axis
            last, ``(B, H, W, D, C)`` instead of ``(B, D, H, W, C)``.
            ``kernel_size``, ``strides`` and the kernel stay in logical order.
        broadcast_input: promise that the input is constant along the lifted
            axis (a lifted image), which fast paths may exploit (the result
            is wrong for any other input unless ``strategy="native"``).
        lifted_pattern: the input is *compact* along the lifted axis: it
            stores only distinct slices, and logical slice ``i`` equals stored
            slice ``lifted_pattern[i]``
            (:mod:`keras_sl.layers.lifted_structure`). The output is compact
            too, in :attr:`output_pattern`. Not with ``strategy="native"``.
        input_patterns: the layer takes a *list* of inputs whose channels it
            reads as if concatenated in that order (a skip connection without
            the concatenation), input ``j`` compact with pattern
            ``input_patterns[j]`` (``None``: all slices stored). The output
            is compact in :attr:`output_pattern` (``None`` when all its
            slices differ). Not with ``strategy="native"``.
        dilation: int or tuple of ``rank`` ints (1 along the lifted axis for
            compact inputs).
        groups: split the input channels into ``groups`` groups, each
            convolved to ``filters / groups`` outputs (``groups ==
            in_channels``: a depthwise convolution).

    Example:
    >>> import numpy as np
    >>> layer = Convolution(rank=3, filters=8, kernel_size=3, strides=2)
    >>> tuple(layer(np.zeros((1, 16, 32, 32, 3), "float32")).shape)
    (1, 8, 16, 16, 8)
    >>> depthwise = Convolution(rank=2, filters=6, kernel_size=5, dilation=2, groups=6)
    >>> tuple(depthwise(np.zeros((1, 16, 16, 6), "float32")).shape), tuple(depthwise.kernel.shape)
    ((1, 16, 16, 6), (5, 5, 1, 6))
    """

    def __init__(
        self,
        rank: int,
        filters: int,
        kernel_size=3,
        strides=1,
        transposed: bool = False,
        use_bias: bool = True,
        data_format: str | None = None,
        kernel_initializer=TORCH_DEFAULT_INIT,
        bias_initializer="zeros",
        strategy: str = "auto",
        lifted_axis_last: bool = False,
        broadcast_input: bool = False,
        lifted_pattern: Sequence[int] | None = None,
        input_patterns: Sequence[Sequence[int] | None] | None = None,
        dilation=1,
        groups: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if rank not in (1, 2, 3):
            raise ValueError(f"rank must be 1, 2 or 3, got {rank}.")
        self.rank = rank
        self.filters = int(filters)
        self.kernel_size = normalize_tuple(kernel_size, rank, "kernel_size")
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"kernel_size must be odd (MONAI 'same' padding), got {self.kernel_size}.")
        self.strides = normalize_tuple(strides, rank, "strides")
        self.dilation = normalize_tuple(dilation, rank, "dilation")
        self.groups = int(groups)
        if self.groups < 1 or self.filters % self.groups:
            raise ValueError(f"groups must be a positive divisor of filters ({self.filters}), got {groups}.")
        self.transposed = bool(transposed)
        self.use_bias = bool(use_bias)
        self.data_format = standardize_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.pads = torch_padding(self.kernel_size, self.dilation)
        if strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {STRATEGIES}, got {strategy!r}. "
                "'auto' picks the fastest exact path for the backend and device."
            )
        self.strategy = strategy
        self.lifted_axis_last = bool(lifted_axis_last)
        self.broadcast_input = bool(broadcast_input)
        if self.broadcast_input and (self.transposed or rank < 2):
            raise ValueError(
                "broadcast_input=True needs a (non-transposed) convolution of rank >= 2: it "
                "reads one slice of an input that is constant along its first spatial axis."
            )
        self.lifted_pattern = _checked_pattern(lifted_pattern, "lifted_pattern")
        self.input_patterns = None
        if input_patterns is not None:
            if lifted_pattern is not None:
                raise ValueError("Give lifted_pattern (one compact input) or input_patterns (a list of inputs), "
                                 "not both.")
            self.input_patterns = tuple(
                _checked_pattern(pattern, f"input_patterns[{j}]") for j, pattern in enumerate(input_patterns)
            )
            lengths = {len(p) for p in self.input_patterns if p is not None}
            if not self.input_patterns or len(lengths) > 1:
                raise ValueError(
                    f"input_patterns must be a non-empty list of patterns (or None) of one lifted length, "
                    f"got {input_patterns}."
                )
        if self.compact:
            if rank < 2 or self.broadcast_input or strategy == "native" or self.dilation[0] != 1:
                raise ValueError(
                    "lifted_pattern and input_patterns need a convolution of rank >= 2, without "
                    "broadcast_input, with dilation 1 along the lifted axis and a strategy other than "
                    "'native' (the compact slices run through the banded path); drop them (and "
                    "concatenate the inputs) to run a plain convolution on full-length inputs."
                )
        self.lifted_length = None

    # -- geometry ------------------------------------------------------------
    @property
    def compact(self) -> bool:
        """Whether the input is compact along the lifted axis."""
        return self.lifted_pattern is not None or self.input_patterns is not None

    @property
    def output_pattern(self) -> tuple[int, ...] | None:
        """Lifted pattern of the output (None when the input is not compact;
        with ``input_patterns``, also None when all output slices differ)."""
        k, s, p = self.kernel_size[0], self.strides[0], self.pads[0]
        if self.lifted_pattern is not None:
            return conv_output_pattern(self.lifted_pattern, k, s, p, self.transposed)[0]
        if self.input_patterns is not None and any(p is not None for p in self.input_patterns):
            pattern = self.joint_output_pattern()[0]
            return None if pattern == tuple(range(len(pattern))) else pattern
        return None

    def joint_output_pattern(self):
        """``(output pattern, one band per input)`` for ``input_patterns``
        (:func:`keras_sl.layers.lifted_structure.joint_conv_output_pattern`)."""
        length = next((len(p) for p in self.input_patterns if p is not None), self.lifted_length)
        if length is None:
            raise ValueError(f"{self.name}: the lifted length is unknown until the layer is built.")
        patterns = tuple(tuple(range(length)) if p is None else p for p in self.input_patterns)
        return joint_conv_output_pattern(patterns, self.kernel_size[0], self.strides[0], self.pads[0],
                                         self.transposed)

    @property
    def channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    @property
    def physical_order(self) -> tuple[int, ...]:
        """Logical (kernel) axis stored at each physical spatial axis."""
        return (*range(1, self.rank), 0) if self.lifted_axis_last else tuple(range(self.rank))

    def physical(self, values: tuple) -> tuple:
        """Per-axis values (strides, ...) in the tensor's spatial order."""
        return tuple(values[i] for i in self.physical_order)

    @property
    def lifted_axis(self) -> int:
        """Tensor axis holding the lifted (logical first) spatial axis."""
        first = 1 if self.data_format == "channels_last" else 2
        return first + self.physical_order.index(0)

    _lifted_position = lifted_axis  # the name the blocks used before

    def build(self, input_shape):
        if self.input_patterns is not None:
            self._build_parts(input_shape)
        else:
            self.in_channels = self._known_channels(input_shape)
            self.lifted_length = input_shape[self.lifted_axis] if self.rank > 1 else None
        if self.in_channels % self.groups:
            raise ValueError(f"{self.name}: groups={self.groups} must divide the {self.in_channels} input channels.")
        if self.lifted_pattern is not None:
            stored = len(set(self.lifted_pattern))
            if self.lifted_length not in (None, stored):
                raise ValueError(
                    f"{self.name}: lifted_pattern {self.lifted_pattern} has {stored} distinct slices but the "
                    f"input stores {self.lifted_length} along the lifted axis (input shape {input_shape}); "
                    "compact the input with keras_sl.layers.LiftedSlices first."
                )
            self.lifted_length = stored
        if self.transposed:
            shape = (*self.kernel_size, self.filters // self.groups, self.in_channels)
        else:
            shape = (*self.kernel_size, self.in_channels // self.groups, self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=self.kernel_initializer)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)

    def _known_channels(self, shape) -> int:
        channels = shape[self.channel_axis]
        if channels is None:
            raise ValueError(
                f"The channel dimension of the input must be known to build {self.name}; got input shape {shape}."
            )
        return int(channels)

    def _build_parts(self, input_shapes):
        """Channels and lifted lengths of a list of inputs (``input_patterns``)."""
        if not isinstance(input_shapes, (list, tuple)) or not isinstance(input_shapes[0], (list, tuple)) \
                or len(input_shapes) != len(self.input_patterns):
            raise ValueError(
                f"{self.name} has input_patterns for {len(self.input_patterns)} inputs; call it "
                f"on a list of that many tensors, got input shape {input_shapes}."
            )
        self.part_channels = tuple(self._known_channels(shape) for shape in input_shapes)
        self.in_channels = sum(self.part_channels)
        logical = {len(p) for p in self.input_patterns if p is not None}
        for pattern, shape in zip(self.input_patterns, input_shapes):
            stored = shape[self.lifted_axis]
            expected = len(set(pattern)) if pattern is not None else next(iter(logical), stored)
            if stored is not None and expected is not None and stored != expected:
                raise ValueError(
                    f"{self.name}: an input with pattern {pattern} should store {expected} "
                    f"slices along the lifted axis, got input shapes {input_shapes}."
                )
            if pattern is None and stored is not None:
                logical.add(stored)
        if len(logical) != 1:
            raise ValueError(
                f"{self.name}: the lifted length of the inputs must be known and equal; got "
                f"input shapes {input_shapes} with input_patterns {self.input_patterns}."
            )
        self.lifted_length = logical.pop()

    def output_length(self, length, axis: int):
        """Output size along logical spatial axis ``axis`` for an input of ``length``."""
        if length is None:
            return None
        k, s, p, d = self.kernel_size[axis], self.strides[axis], self.pads[axis], self.dilation[axis]
        if self.transposed:
            return (length - 1) * s + d * (k - 1) + 1 - 2 * p + (s - 1)
        return (length + 2 * p - d * (k - 1) - 1) // s + 1

    def compute_output_shape(self, input_shape):
        if self.input_patterns is not None:
            input_shape = input_shape[next((j for j, p in enumerate(self.input_patterns) if p is None), 0)]
        shape = list(input_shape)
        first = 1 if self.data_format == "channels_last" else 2
        for i, logical in enumerate(self.physical_order):
            shape[first + i] = self.output_length(shape[first + i], logical)
        shape[self.channel_axis] = self.filters
        if self.lifted_pattern is not None:
            shape[self.lifted_axis] = len(set(self.output_pattern))
        elif self.input_patterns is not None:
            shape[self.lifted_axis] = len(set(self.joint_output_pattern()[0]))
        return tuple(shape)

    # -- forward ---------------------------------------------------------------
    @property
    def execution_request(self) -> str | None:
        """What ``strategy`` asks of :func:`keras_sl.fast.dispatch.run`."""
        return {"native": dispatch.REFERENCE, "banded": "banded", "auto": None}[self.strategy]

    @property
    def resolved_strategy(self) -> str:
        """``"banded"`` when the lifted axis runs folded into the channels
        (a path of :mod:`keras_sl.fast.banded_convolution`), else ``"native"``."""
        if self.strategy != "auto":
            return self.strategy
        path = dispatch.resolve("convolution", self, None, None, None, prefer=self.execution_request)
        return "native" if path is None else "banded"

    @property
    def uses_broadcast_input(self) -> bool:
        """Whether the input's constancy along the lifted axis is used."""
        return self.broadcast_input and self.strategy != "native" and bool(self.lifted_length)

    def call(self, inputs, add_bias: bool = True, add_input: bool = False):
        """``add_bias=False`` leaves the bias out (a following instance norm
        cancels it; see ``keras_sl.layers.InstanceNorm``). ``add_input=True``
        returns ``inputs + conv(inputs)`` (stride 1, ``filters`` input
        channels) as one convolution: the identity joins the kernel's centre
        tap, so the sum is not a separate pass."""
        dtype = (inputs[0] if self.input_patterns is not None else inputs).dtype
        if self.input_patterns is None and self.lifted_pattern is None:
            self._check_lifted_length(inputs.shape)
        y = self.convolve(inputs, self.kernel_with_identity(dtype) if add_input else None)
        return self.plus_bias(y, self.bias) if self.use_bias and add_bias else y

    def _check_lifted_length(self, shape) -> None:
        # Fast paths fold the lifted axis by the length seen at build: a different one would be misread.
        length = shape[self.lifted_axis] if self.rank > 1 and len(shape) == self.rank + 2 else None
        if self.lifted_length is not None and length is not None and length != self.lifted_length:
            raise ValueError(
                f"{self.name} was built for inputs of length {self.lifted_length} along the lifted axis "
                f"(axis {self.lifted_axis}) and called on shape {tuple(shape)}. Build it on the shape it is called "
                "with, or with that axis None (any length)."
            )

    def convolve(self, inputs, kernel=None, filters: int | None = None):
        """The convolution without bias, with ``kernel`` (``filters``
        outputs) instead of the layer's when given; op ``"convolution"``."""
        return dispatch.run("convolution", Convolution.reference_convolution, self, inputs,
                            self.kernel if kernel is None else kernel, filters or self.filters,
                            prefer=self.execution_request)

    def reference_convolution(self, inputs, kernel, filters: int):
        """Compact inputs expanded to all their slices (and concatenated),
        one N-D convolution, the output's distinct slices kept."""
        del filters  # the kernel's
        x = self.expanded(inputs)
        fn = conv_transpose if self.transposed else conv
        y = fn(x, self.physical_kernel(kernel, x.dtype), self.physical(self.strides), self.physical(self.dilation),
               self.groups, self.data_format)
        if self.output_pattern is not None:
            y = ops.take(y, np.asarray(representatives(self.output_pattern), "int32"), axis=self.lifted_axis)
        return y

    def expanded(self, inputs):
        """The input(s) with every logical slice stored, channels concatenated."""
        if self.input_patterns is not None:
            return ops.concatenate(
                [x if p is None else ops.take(x, np.asarray(p, "int32"), axis=self.lifted_axis)
                 for x, p in zip(inputs, self.input_patterns)], axis=self.channel_axis)
        if self.lifted_pattern is not None:
            return ops.take(inputs, np.asarray(self.lifted_pattern, "int32"), axis=self.lifted_axis)
        return inputs

    def physical_kernel(self, kernel, dtype):
        """``kernel`` cast to ``dtype``, its spatial axes in the tensor's order."""
        kernel = _cast(kernel, dtype)
        if self.lifted_axis_last:
            kernel = ops.transpose(kernel, (*self.physical_order, self.rank, self.rank + 1))
        return kernel

    def plus_bias(self, y, bias):
        """``y`` plus a per-filter vector on this layer's channel axis."""
        bias = _cast(bias, y.dtype)
        if self.data_format == "channels_last":
            return y + bias
        return y + ops.reshape(bias, (1, -1) + (1,) * (len(y.shape) - 2))

    _plus_bias = plus_bias

    def kernel_with_identity(self, dtype):
        """The kernel plus the identity at its centre tap (``add_input``)."""
        if self.transposed or any(st != 1 for st in self.strides) or self.in_channels != self.filters \
                or self.groups != 1 or self.uses_broadcast_input:
            raise ValueError(
                f"{self.name}: add_input=True needs a stride-1, non-transposed, ungrouped convolution with as "
                f"many input channels as filters ({self.filters}), got strides {self.strides}, "
                f"{self.in_channels} input channels, transposed={self.transposed}, groups={self.groups}."
            )
        centre = np.zeros(self.kernel_size, "float32")
        centre[tuple(k // 2 for k in self.kernel_size)] = 1.0
        eye = ops.eye(self.filters, dtype=dtype)
        return _cast(self.kernel, dtype) + ops.einsum("...,ab->...ab", ops.cast(centre, dtype), eye)

    def call_deferred(self, inputs):
        """``(values, finish)``: the output without bias is ``finish(values)``.

        ``values`` holds, per sample and filter, the output's numbers in
        another order, on which per-filter statistics and element-wise maps
        (a norm and its activation) can run before ``finish`` reorders them
        (a fast path may fuse the reordering with them: op
        ``"convolution_deferred"``). Reference: ``values`` is
        ``self(inputs, add_bias=False)`` and ``finish`` is None.

        Example:
        >>> import numpy as np
        >>> conv = Convolution(rank=2, filters=4, strides=2, transposed=True)
        >>> x = np.random.rand(1, 8, 8, 3).astype("float32")
        >>> values, finish = conv.call_deferred(x)
        >>> y = values if finish is None else finish(values)
        >>> bool(np.allclose(keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(conv(x, add_bias=False)),
        ...                  atol=1e-5))
        True
        """
        if not self.built:
            self.build(inputs.shape)
        return dispatch.run("convolution_deferred", lambda layer, x: (layer(x, add_bias=False), None), self, inputs)

    def call_jointly(self, inputs, others: Sequence["Convolution"], add_bias: Sequence[bool] | None = None):
        """This convolution's output and those of ``others`` on the same
        ``inputs`` (op ``"joint_convolution"``: a fast path may run them as
        one convolution). ``others`` must match this layer in everything
        but ``filters`` and weights, as a MONAI residual unit's strided
        first convolution and its residual path do. ``add_bias[j]=False``
        leaves output ``j``'s bias out (output 0 is this layer's).

        Example:
        >>> import numpy as np
        >>> a = Convolution(rank=2, filters=4, strides=2)
        >>> b = Convolution(rank=2, filters=6, strides=2)
        >>> x = np.random.rand(1, 8, 8, 3).astype("float32")
        >>> ya, yb = a.call_jointly(x, [b])
        >>> [tuple(t.shape) for t in (ya, yb)]
        [(1, 4, 4, 4), (1, 4, 4, 6)]
        """
        convs = (self, *others)
        if self.transposed:
            raise ValueError(
                f"{self.name}: call_jointly runs ordinary convolutions (a transposed kernel stores "
                "its filters on another axis); call transposed convolutions separately."
            )
        add_bias = (True,) * len(convs) if add_bias is None else tuple(add_bias)
        if len(add_bias) != len(convs):
            raise ValueError(f"add_bias needs one flag per output ({len(convs)}), got {len(add_bias)}.")
        for conv_layer in convs:  # built first: in_channels and lifted_length come from the input
            if not conv_layer.built:
                conv_layer.build(inputs.shape)
        for other in others:
            mismatch = [name for name in _JOINT_ATTRIBUTES if getattr(other, name) != getattr(self, name)]
            if mismatch:
                raise ValueError(
                    f"{self.name} and {other.name} cannot run as one convolution: they differ in "
                    f"{', '.join(mismatch)}. Call them separately."
                )
        return dispatch.run(
            "joint_convolution",
            lambda convs, x, add_bias: [c(x, add_bias=add) for c, add in zip(convs, add_bias)],
            convs, inputs, add_bias,
        )

    def lifted_sum(self, inputs, slice_weights, identity: bool = False, add_input: bool = False):
        """``sum_o slice_weights[o] * output[..., o, ...]``: the output
        weighted and summed over the lifted axis (removed); op
        ``"lifted_sum"`` (a fast path computes it without the full output).

        ``identity=True`` sums the identity map instead of the convolution,
        ``add_input=True`` the convolution plus its input (stride 1); both
        need ``filters`` input channels. Plain (non-transposed, full-length)
        inputs of rank >= 2 only.

        Example:
        >>> import numpy as np
        >>> conv = Convolution(rank=3, filters=2, lifted_axis_last=True)
        >>> x = np.random.rand(1, 8, 8, 4, 3).astype("float32")
        >>> w = np.array([1.0, 0.0, 1.0, 1.0], "float32")
        >>> full = keras.ops.convert_to_numpy(conv(x))
        >>> summed = keras.ops.convert_to_numpy(conv.lifted_sum(x, w))
        >>> bool(np.allclose(summed, (full * w[:, None]).sum(axis=3), atol=1e-5))
        True
        """
        if self.rank < 2 or self.transposed or self.compact:
            raise ValueError(
                f"{self.name}: lifted_sum needs a (non-transposed) convolution of rank >= 2 on a "
                "full-length input (no lifted_pattern/input_patterns)."
            )
        if not self.built:
            self.build(inputs.shape)
        if (identity or add_input) and self.in_channels != self.filters:
            raise ValueError(f"{self.name}: adding the identity needs {self.filters} input channels.")
        if add_input and any(st != 1 for st in self.strides):
            raise ValueError(f"{self.name}: add_input needs stride 1, got {self.strides}.")
        return dispatch.run("lifted_sum", Convolution.reference_lifted_sum, self, inputs, slice_weights,
                            identity, add_input)

    def reference_lifted_sum(self, inputs, slice_weights, identity: bool, add_input: bool):
        y = ops.convert_to_tensor(inputs) if identity else self(inputs, add_input=add_input)
        shape = [1] * len(y.shape)
        shape[self.lifted_axis] = -1
        return ops.sum(y * ops.reshape(_cast(ops.convert_to_tensor(slice_weights), y.dtype), shape),
                       axis=self.lifted_axis)

    # -- bookkeeping -----------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            rank=self.rank,
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            transposed=self.transposed,
            use_bias=self.use_bias,
            data_format=self.data_format,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            strategy=self.strategy,
            lifted_axis_last=self.lifted_axis_last,
            broadcast_input=self.broadcast_input,
            lifted_pattern=None if self.lifted_pattern is None else list(self.lifted_pattern),
            input_patterns=patterns_config(self.input_patterns),
            dilation=self.dilation,
            groups=self.groups,
        )
        return config

    def logical_shape(self, shape, output: bool = True) -> tuple:
        """``shape`` with a compact lifted axis restored to its logical length."""
        shape = list(shape)
        pattern = self.output_pattern if output else self.lifted_pattern
        if pattern is not None:
            shape[self.lifted_axis] = len(pattern)
        return tuple(shape)

    def load_torch_state(self, state, prefix: str = "") -> set[str]:
        """Copy ``{prefix}weight`` (and ``{prefix}bias``) of a PyTorch
        ``nn.ConvNd`` / ``nn.ConvTransposeNd`` (their weight layouts map to
        this layer's by the same axis permutation), or of an ``nn.Linear``
        on tokens ported as a 1x1 convolution; returns the keys used."""
        used: set[str] = set()
        assign_from_state(self.kernel, state, prefix + "weight", used, self._torch_kernel)
        if self.use_bias:
            assign_from_state(self.bias, state, prefix + "bias", used)
        return used

    def _torch_kernel(self, weight):
        weight = to_numpy(weight)
        if weight.ndim == 2 and all(k == 1 for k in self.kernel_size) and self.groups == 1:
            return torch_linear_kernel(weight).reshape(tuple(self.kernel.shape))
        return torch_conv_kernel(weight)

    def macs(self, input_shape, output_shape) -> int:
        """Multiply-accumulates, counted as thop does (per output element) on
        the logical (full-length) tensors, compact or not."""
        out = [d for i, d in enumerate(self.logical_shape(output_shape)) if i != 0]
        return int(math.prod(out)) * (self.in_channels // self.groups) * math.prod(self.kernel_size)
