"""Sliding-window inference: a dense-prediction network run on windows of a large image, blended.

An image larger than anything the network was trained on (FIVES 2048²,
whole-slide tiles) is cut into overlapping windows of a fixed size; each
batch of ``batch_size`` windows goes through the network in one call, and
each window's output is added, weighted, into one output-sized accumulator
(never all windows at once), then divided by the summed weights. The
scheduling and the blending run on the host in NumPy, so the blend is the
same on every backend.

Geometry (as MONAI's ``sliding_window_inference``, written afresh):

* an axis shorter than the window is padded at its end (``pad_mode``,
  reflect by default) up to the window; the output is cropped back;
* windows start every ``step = max(1, floor(window * (1 - overlap)))``
  pixels from 0, and one more window is placed so that the last one ends
  exactly at the border when the size is not ``window + k * step``;
* ``"constant"`` blending weighs every pixel of a window by 1 (the mean of
  the overlapping windows); ``"gaussian"`` by a Gaussian centred on the
  window, ``sigma = sigma_scale * window`` per axis, scaled to a maximum of
  1 and floored at :data:`MIN_WEIGHT` (so window borders still count a
  little, and every pixel has a positive total weight).

Example:
>>> import numpy as np
>>> image = np.random.default_rng(0).random((1, 50, 37, 3)).astype("float32")
>>> doubled = sliding_window_inference(image, lambda w: 2 * w[..., :1], window_size=(32, 32), overlap=0.5)
>>> doubled.shape, bool(np.allclose(doubled, 2 * image[..., :1]))
((1, 50, 37, 1), True)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import numpy as np

from keras_sl.utils.layout import standardize_data_format
from keras_sl.utils.padding import pad_to_multiple

#: Blending modes: ``"constant"`` (every window pixel weighs 1) or ``"gaussian"``.
BLENDS = ("constant", "gaussian")
#: The smallest Gaussian blending weight (MONAI floors its importance map the same way).
MIN_WEIGHT = 1e-3


def _window_tuple(size, rank: int | None = None, name: str = "window_size") -> tuple[int, ...]:
    """``size`` (an int for every axis, or one int per axis) as a tuple of positive ints."""
    if isinstance(size, bool) or size is None:
        raise ValueError(f"{name} must be a positive int or a tuple of positive ints, got {size!r}.")
    if isinstance(size, (int, np.integer)):
        if rank is None:
            return (int(size),)
        size = (int(size),) * rank
    try:
        values = tuple(int(v) for v in size)
    except TypeError:
        raise ValueError(f"{name} must be a positive int or a tuple of positive ints, got {size!r}.") from None
    if not values or any(v < 1 for v in values) or any(isinstance(v, bool) for v in size):
        raise ValueError(f"{name} must be a positive int or a tuple of positive ints, got {size!r}.")
    if rank is not None and len(values) == 1 and rank > 1:
        values = values * rank
    if rank is not None and len(values) != rank:
        raise ValueError(f"{name}={size!r} has {len(values)} axes but the images have {rank} spatial axes; "
                         f"pass one int or {rank} ints.")
    return values


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """How to predict by windows: size, overlap, blending and windows per network call.

    Args:
        size: window size per spatial axis (an int: the same on every axis).
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
        blend: ``"constant"`` or ``"gaussian"``.
        sigma: Gaussian sigma as a fraction of the window (per axis or one
            float), MONAI's ``sigma_scale`` (default 0.125).
        batch_size: windows per network call (memory grows with it).

    Example:
    >>> WindowSpec(256, overlap=0.5, blend="gaussian").for_rank(2).size
    (256, 256)
    """

    size: tuple[int, ...] | int
    overlap: float = 0.25
    blend: str = "constant"
    sigma: float | tuple[float, ...] = 0.125
    batch_size: int = 4

    def __post_init__(self):
        object.__setattr__(self, "size", _window_tuple(self.size))
        check_window_options(self.overlap, self.blend, self.sigma)
        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"The window batch size must be a positive int, got {self.batch_size!r}.")
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "overlap", float(self.overlap))

    def for_rank(self, rank: int) -> WindowSpec:
        """The same spec with ``size`` given for each of ``rank`` axes."""
        return dataclasses.replace(self, size=_window_tuple(self.size, rank))


def check_window_options(overlap, blend, sigma) -> None:
    """ValueError with the fix for an overlap outside ``[0, 1)``, an unknown
    blend or a non-positive sigma."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.floating)) or not 0 <= overlap < 1:
        raise ValueError(f"window overlap must be a fraction in [0, 1) (e.g. 0.25), got {overlap!r}.")
    if blend not in BLENDS:
        raise ValueError(f"window blend must be one of {BLENDS}, got {blend!r}.")
    sigmas = np.atleast_1d(np.asarray(sigma, dtype="float64"))
    if sigmas.ndim != 1 or not np.all(np.isfinite(sigmas)) or not np.all(sigmas > 0):
        raise ValueError(f"window sigma must be a positive fraction of the window (e.g. 0.125), got {sigma!r}.")


def parse_window_option(text: str):
    """A command-line ``--window`` value as ``predict``'s ``window`` argument.

    ``"auto"`` -> None (as the preset's preprocessor says), ``"resize"`` ->
    False, ``"window"`` -> True (the preprocessor's window size), ``"256"``
    -> 256, ``"256x320"`` -> ``(256, 320)``.

    Example:
    >>> [parse_window_option(t) for t in ("auto", "resize", "window", "256", "256x320")]
    [None, False, True, 256, (256, 320)]
    """
    value = str(text).strip().lower()
    named = {"auto": None, "resize": False, "window": True}
    if value in named:
        return named[value]
    try:
        sizes = tuple(int(v) for v in value.split("x"))
    except ValueError:
        sizes = ()
    if not sizes or any(v < 1 for v in sizes):
        raise ValueError(f"--window takes auto, resize, window, N or HxW (positive ints), got {text!r}.")
    return sizes[0] if len(sizes) == 1 else sizes


def window_starts(size: int, window: int, overlap: float = 0.25) -> list[int]:
    """Start offsets of the windows along one axis of length ``size``.

    Every ``max(1, floor(window * (1 - overlap)))`` pixels, plus one window
    ending exactly at the border; ``[0]`` when ``size <= window`` (the axis
    is padded up to the window).

    Example:
    >>> window_starts(100, 32, 0.25), window_starts(20, 32), window_starts(64, 32, 0.5)
    ([0, 24, 48, 68], [0], [0, 16, 32])
    """
    if size <= window:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def window_grid(spatial_shape: Sequence[int], window_size: Sequence[int], overlap: float = 0.25):
    """``(starts per axis, grid shape)`` of the windows over an image.

    Windows are enumerated in C order over the grid (the last axis fastest),
    as the per-window outputs of :func:`sliding_window_inference` are.

    Example:
    >>> window_grid((50, 37), (32, 32), 0.5)
    ([[0, 16, 18], [0, 5]], (3, 2))
    """
    starts = [window_starts(int(n), int(w), overlap) for n, w in zip(spatial_shape, window_size)]
    return starts, tuple(len(s) for s in starts)


def blend_weights(window_size: Sequence[int], blend: str = "constant", sigma=0.125) -> np.ndarray:
    """The weight of each pixel of a window, ``(*window_size,)`` float64.

    ``"constant"``: ones. ``"gaussian"``: ``exp(-d² / (2 σ²))`` per axis with
    ``d`` the distance to the window's centre ``(n - 1) / 2`` and
    ``σ = sigma * n``, multiplied over the axes, scaled to a maximum of 1,
    floored at :data:`MIN_WEIGHT`.

    Example:
    >>> w = blend_weights((5, 4), "gaussian", sigma=0.25)
    >>> w.shape, float(w.max()) <= 1.0, bool((w == w[::-1, ::-1]).all())
    ((5, 4), True, True)
    """
    window = tuple(int(n) for n in window_size)
    check_window_options(0.0, blend, sigma)
    if blend == "constant":
        return np.ones(window, dtype="float64")
    sigmas = np.broadcast_to(np.atleast_1d(np.asarray(sigma, dtype="float64")), (len(window),))
    weights = np.ones((), dtype="float64")
    for n, s in zip(window, sigmas):
        d = np.arange(n, dtype="float64") - (n - 1) / 2.0
        weights = np.multiply.outer(weights, np.exp(-0.5 * (d / (s * n)) ** 2))
    weights = weights / weights.max()
    return np.maximum(weights, MIN_WEIGHT)


def _region(starts, window, first: int, ndim: int) -> tuple:
    index = [slice(None)] * ndim
    for i, (s, w) in enumerate(zip(starts, window)):
        index[first + i] = slice(s, s + w)
    return tuple(index)


def _broadcastable(weights: np.ndarray, first: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[first:first + weights.ndim] = weights.shape
    return weights.reshape(shape)


def sliding_window_inference(
    inputs: np.ndarray,
    predictor: Callable[[np.ndarray], np.ndarray | tuple],
    window_size: int | Sequence[int],
    overlap: float = 0.25,
    blend: str = "constant",
    sigma: float | Sequence[float] = 0.125,
    batch_size: int = 4,
    data_format: str | None = None,
    lead_axes: int = 0,
    pad_mode: str = "reflect",
    dtype: str = "float32",
):
    """Predict ``inputs`` window by window and blend the windows' outputs.

    Args:
        inputs: a batch of images ``(B, *spatial, C)`` (``(B, C, *spatial)``
            for channels_first), already normalised: the network's input.
        predictor: ``windows (n, *window, C) -> outputs (n, *lead, *window, K)``
            (``(n, K, *lead, *window)`` channels_first), e.g. a model's
            ``predict_on_batch``. It may return a tuple ``(dense, *extra)``:
            ``dense`` is blended, each ``extra`` (one row per window, e.g. a
            per-window score) is collected on the window grid. Always called
            with the same number of windows (the last batch is filled up
            with copies of its last window, whose outputs are dropped), so a
            compiled network sees one shape.
        window_size: an int (every axis) or one int per spatial axis.
        overlap: fraction of a window shared with the next, in ``[0, 1)``.
        blend: ``"constant"`` or ``"gaussian"`` (:func:`blend_weights`).
        sigma: the Gaussian's sigma as a fraction of the window.
        batch_size: windows per ``predictor`` call.
        data_format: layout of ``inputs`` and of the outputs.
        lead_axes: axes of the output between the batch (channels_first:
            channel) axis and the spatial axes, e.g. 1 for an SL network's
            per-slice logits ``(n, m, *window, K)``.
        pad_mode: NumPy pad mode for axes shorter than the window.
        dtype: accumulator and output dtype (float32; float64 for exact sums).

    Returns:
        ``dense`` ``(B, *lead, *spatial, K)`` at the inputs' spatial size, or
        ``(dense, *extra)`` with each extra ``(B, *grid, ...)``
        (:func:`window_grid`) when ``predictor`` returns a tuple.

    Example:
    >>> import numpy as np
    >>> x = np.ones((2, 20, 30, 1), "float32")
    >>> def per_window(w):
    ...     return w * 3, w.mean(axis=(1, 2, 3))   # dense output and one value per window
    >>> dense, means = sliding_window_inference(x, per_window, 16, overlap=0.5, blend="gaussian")
    >>> dense.shape, means.shape, bool(np.allclose(dense, 3))
    ((2, 20, 30, 1), (2, 2, 3), True)
    """
    data_format = standardize_data_format(data_format)
    x = np.asarray(inputs)
    if x.ndim < 3:
        raise ValueError(f"inputs must be a batch of images (B, *spatial, C), got shape {x.shape}.")
    rank = x.ndim - 2
    window = _window_tuple(window_size, rank)
    check_window_options(overlap, blend, sigma)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size (windows per network call) must be a positive int, got {batch_size!r}.")
    first_in = 1 if data_format == "channels_last" else 2
    spatial = tuple(x.shape[first_in:first_in + rank])
    # Axes shorter than the window: pad their end up to one window.
    need = [w if n < w else 1 for n, w in zip(spatial, window)]
    padded_x, _ = pad_to_multiple(x, need, data_format, mode=pad_mode) if any(m > 1 for m in need) else (x, None)
    padded = tuple(padded_x.shape[first_in:first_in + rank])
    starts, grid = window_grid(padded, window, overlap)
    positions = list(itertools.product(*starts))
    call_batch = min(int(batch_size), len(positions))
    weights = blend_weights(window, blend, sigma)
    total = np.zeros(padded, dtype="float64")
    for p in positions:
        total[_region(p, window, 0, rank)] += weights
    weights = weights.astype(dtype)
    total = total.astype(dtype)

    dense_out, extra_out = [], None
    for b in range(len(padded_x)):
        image = padded_x[b]  # no batch axis: spatial axes start at first_in - 1
        acc = None
        extras: list[list] | None = None
        for begin in range(0, len(positions), call_batch):
            chunk = positions[begin:begin + call_batch]
            windows = [image[_region(p, window, first_in - 1, image.ndim)] for p in chunk]
            windows += [windows[-1]] * (call_batch - len(chunk))
            result = predictor(np.stack(windows))
            dense, *extra = result if isinstance(result, tuple) else (result,)
            dense = np.asarray(dense)
            if acc is None:
                first_out = lead_axes if data_format == "channels_last" else lead_axes + 1
                _check_dense(dense, call_batch, window, first_out + 1, rank)
                acc_shape = list(dense.shape[1:])
                acc_shape[first_out:first_out + rank] = padded
                acc = np.zeros(acc_shape, dtype=dtype)
                w_b = _broadcastable(weights, first_out, acc.ndim)
                extras = [[] for _ in extra]
            for j, p in enumerate(chunk):
                acc[_region(p, window, first_out, acc.ndim)] += dense[j] * w_b
            for k, values in enumerate(extra):
                extras[k].extend(np.asarray(values)[:len(chunk)])
        acc /= _broadcastable(total, first_out, acc.ndim)
        crop = _region((0,) * rank, spatial, first_out, acc.ndim)
        dense_out.append(acc[crop])
        if extras:
            extra_out = extra_out or [[] for _ in extras]
            for k, values in enumerate(extras):
                stacked = np.stack(values)
                extra_out[k].append(stacked.reshape(grid + stacked.shape[1:]))
    dense_out = np.stack(dense_out)
    if extra_out is None:
        return dense_out
    return (dense_out, *[np.stack(values) for values in extra_out])


def _check_dense(dense: np.ndarray, n: int, window: tuple, first: int, rank: int) -> None:
    if dense.ndim < first + rank or len(dense) != n:
        raise ValueError(f"The predictor returned shape {dense.shape} for {n} windows of size {window}; it must "
                         "return one dense output per window (batch axis first).")
    got = tuple(dense.shape[first:first + rank])
    if got != tuple(window):
        raise ValueError(
            f"The predictor's outputs have spatial size {got} for windows of size {window}: sliding-window "
            "inference blends dense outputs at the input's resolution. Check lead_axes / data_format, or "
            "use a network whose output has its input's spatial size."
        )
