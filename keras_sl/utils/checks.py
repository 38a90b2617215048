"""Input validation with error messages that say how to fix the problem."""

from __future__ import annotations

import math

import numpy as np


def total_strides(strides, rank: int) -> tuple[int, ...]:
    """Product of per-level strides along each spatial axis."""
    out = [1] * rank
    for s in strides:
        s = (s,) * rank if isinstance(s, int) else tuple(s)
        out = [a * b for a, b in zip(out, s)]
    return tuple(out)


def check_image_batch(shape, *, in_channels: int, multiples, data_format: str, model_name: str):
    """Raise a helpful ValueError if a batch cannot go through the network.

    ``shape`` is a batched k-D image shape; ``multiples`` the network's total
    stride along each of the k image axes. Unknown (None) dims are skipped.
    """
    shape = tuple(shape)
    rank = len(multiples)
    if len(shape) != rank + 2:
        raise ValueError(
            f"{model_name} expects batched {rank}-D images of rank {rank + 2} "
            f"({'(batch, *spatial, channels)' if data_format == 'channels_last' else '(batch, channels, *spatial)'}), "
            f"got shape {shape}. Add a batch axis with x[None] for a single image."
        )
    ch = shape[-1] if data_format == "channels_last" else shape[1]
    spatial = shape[1:-1] if data_format == "channels_last" else shape[2:]
    if ch is not None and int(ch) != in_channels:
        hint = (
            " For grayscale images use np.repeat(x, 3, axis=-1)," if ch == 1 and in_channels == 3 else ""
        )
        raise ValueError(
            f"{model_name} was built for {in_channels} input channel(s) but the "
            f"input has {ch} (shape {shape}, data_format={data_format!r}).{hint} "
            f"Or build the model with in_channels={ch}."
        )
    bad = [
        (d, m) for d, m in zip(spatial, multiples) if d is not None and int(d) % m != 0
    ]
    if bad:
        need = tuple(
            None if d is None else int(math.ceil(int(d) / m) * m)
            for d, m in zip(spatial, multiples)
        )
        raise ValueError(
            f"{model_name} needs every spatial size to be a multiple of its total "
            f"stride {tuple(multiples)}, got spatial size {tuple(spatial)}. "
            f"Resize or pad the images to {need}, or use "
            "`model.predict(x)` / `keras_sl.utils.pad_to_multiple`, which pad "
            "and crop back automatically."
        )


def check_binary_mask(y, name: str = "masks") -> None:
    """Reject masks stored as 0/255 (or other non-[0, 1] values)."""
    y = np.asarray(y)
    if y.size == 0:
        return
    lo, hi = float(np.min(y)), float(np.max(y))
    if hi > 1.0 or lo < 0.0:
        raise ValueError(
            f"{name} must hold values in [0, 1], found range [{lo:g}, {hi:g}]. "
            "Masks saved as 0/255 images must be binarised first, e.g. "
            "`y = (y >= 128).astype('float32')`."
        )
