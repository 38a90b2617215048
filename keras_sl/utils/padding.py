"""Pad images to a multiple of the network stride and crop predictions back."""

from __future__ import annotations

import numpy as np


def pad_to_multiple(x: np.ndarray, multiples, data_format: str = "channels_last", mode: str = "reflect"):
    """Pad the spatial axes of a batch on the bottom/right to ``multiples``.

    Returns ``(padded, crop)`` where ``crop`` is a tuple of slices that
    undoes the padding on any array with the same layout.

    Example:
    >>> x = np.zeros((1, 30, 50, 3), "float32")
    >>> padded, crop = pad_to_multiple(x, (16, 16))
    >>> padded.shape, padded[crop].shape
    ((1, 32, 64, 3), (1, 30, 50, 3))
    """
    x = np.asarray(x)
    first = 1 if data_format == "channels_last" else 2
    pads = [(0, 0)] * x.ndim
    crop = [slice(None)] * x.ndim
    for i, m in enumerate(multiples):
        n = x.shape[first + i]
        extra = (-n) % m
        pads[first + i] = (0, extra)
        crop[first + i] = slice(0, n)
    if any(p[1] for p in pads):
        if mode == "reflect" and any(p[1] >= x.shape[i] for i, p in enumerate(pads)):
            mode = "symmetric" if all(p[1] <= x.shape[i] for i, p in enumerate(pads)) else "edge"
        x = np.pad(x, pads, mode=mode)
    return x, tuple(crop)
