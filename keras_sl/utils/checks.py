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


def _layout(data_format: str) -> str:
    return "(batch, *spatial, channels)" if data_format == "channels_last" else "(batch, channels, *spatial)"


def _layout_hint(shape, in_channels: int, data_format: str) -> str:
    """A hint when a batch looks like the other data format."""
    if len(shape) < 3:
        return ""
    first, last = shape[1], shape[-1]
    if data_format == "channels_last" and first == in_channels and last != in_channels:
        return (" The batch looks channels-first (N, C, H, W): move the channels last with "
                "np.moveaxis(x, 1, -1), or build the model with data_format='channels_first'.")
    if data_format == "channels_first" and last == in_channels and first != in_channels:
        return (" The batch looks channels-last (N, H, W, C): move the channels first with "
                "np.moveaxis(x, -1, 1), or build the model with data_format='channels_last'.")
    return ""


def check_image_batch(shape, *, in_channels: int, multiples, data_format: str, model_name: str):
    """Raise a helpful ValueError if a batch cannot go through the network.

    ``shape`` is a batched k-D image shape; ``multiples`` the network's total
    stride along each of the k image axes. Unknown (None) dims are skipped.
    """
    shape = tuple(shape)
    rank = len(multiples)
    if len(shape) != rank + 2:
        channel = shape[-1] if data_format == "channels_last" else (shape[0] if shape else None)
        if len(shape) == rank + 1 and channel == in_channels:
            fix = "Add a batch axis with x[None] for a single image."
        elif len(shape) == rank + 1:
            axis = "-1" if data_format == "channels_last" else "1"
            fix = (f"For a batch of single-channel images add the channel axis with np.expand_dims(x, {axis}); "
                   "for a single image add a batch axis with x[None].")
        else:
            fix = "Add a batch axis with x[None] for a single image."
        raise ValueError(
            f"{model_name} expects batched {rank}-D images of rank {rank + 2} {_layout(data_format)}, "
            f"got shape {shape}. {fix}"
        )
    ch = shape[-1] if data_format == "channels_last" else shape[1]
    spatial = shape[1:-1] if data_format == "channels_last" else shape[2:]
    if ch is not None and int(ch) != in_channels:
        hint = _layout_hint(shape, in_channels, data_format)
        if not hint:
            grey = " For grayscale images use np.repeat(x, 3, axis=-1)," if ch == 1 and in_channels == 3 else ""
            hint = f"{grey} Or build the model with in_channels={ch}."
        raise ValueError(
            f"{model_name} was built for {in_channels} input channel(s) but the "
            f"input has {ch} (shape {shape}, data_format={data_format!r}).{hint}"
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


def check_pixel_dtype(dtype, what: str = "images") -> None:
    """Raise a TypeError unless ``dtype`` holds real pixel values (bool, int, uint or float)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biuf":
        return
    if dtype.kind == "c":
        fix = "pass real pixel values, e.g. np.abs(x) or x.real."
    elif dtype.kind == "O":
        fix = ("an object array holds Python objects, not pixels: pass a list of (H, W, C) arrays for images "
               "of different sizes, or x.astype('float32') for one batch.")
    elif dtype.kind in "USa":
        fix = ("strings are not pixels: read the files first, e.g. "
               "np.asarray(PIL.Image.open(path).convert('RGB')) or keras_sl.datasets.Dataset.read_image(path).")
    else:
        fix = "pass uint8, integer or float pixel values."
    raise TypeError(f"{what}: dtype {dtype} is not a pixel type; {fix}")


def _nonfinite_counts(arrays) -> list[tuple[int, int]]:
    """``(index, count)`` of the arrays holding NaN or Inf values."""
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.dtype.kind in "fc" and a.size:
            n = int(a.size - np.count_nonzero(np.isfinite(a)))
            if n:
                out.append((i, n))
    return out


def _index_list(bad: list[tuple[int, int]], total: int, noun: str) -> str:
    shown = ", ".join(f"{noun} {i} ({n} value{'s' if n > 1 else ''})" for i, n in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"{shown}{more} of {total}"


def check_finite_images(images, what: str = "image") -> None:
    """Raise a ValueError naming the images (index in the batch or list) that
    hold NaN or Inf pixel values. ``images``: a batch array or a list."""
    if isinstance(images, np.ndarray):
        if images.dtype.kind not in "fc" or np.isfinite(images).all():
            return
    elif all(np.asarray(a).dtype.kind not in "fc" or np.isfinite(a).all() for a in images):
        return
    bad = _nonfinite_counts(images)
    raise ValueError(
        f"NaN or Inf pixel values in {_index_list(bad, len(images), what)}. A non-finite pixel makes the "
        "whole prediction (and training) NaN; replace them, e.g. np.nan_to_num(x, nan=0.0, posinf=0.0, "
        "neginf=0.0), or leave those images out."
    )


#: Largest magnitude a preprocessed pixel may have. Normalised images are of
#: order 1; far beyond this, float32 network arithmetic overflows (NaN outputs).
MAX_NETWORK_INPUT = 1e12


def check_network_inputs(batch: np.ndarray, raw_images, indices, what: str = "image") -> None:
    """After preprocessing: raise if ``batch`` (float32, one row per entry of
    ``indices``) is not finite or beyond :data:`MAX_NETWORK_INPUT`, naming
    the raw images. NaN/Inf inputs get :func:`check_finite_images`' message;
    finite inputs that become too large (or overflow float32) after scaling
    and normalisation get their own."""
    batch = np.asarray(batch)
    if batch.size == 0:
        return
    lo, hi = float(batch.min()), float(batch.max())
    if -MAX_NETWORK_INPUT <= lo and hi <= MAX_NETWORK_INPUT:  # False for NaN
        return
    check_finite_images([raw_images[i] for i in indices], what)  # the inputs themselves
    rows = batch.reshape(len(batch), -1)
    bad = []
    for j, row in enumerate(rows):
        n = int(np.count_nonzero(~(np.abs(row) <= MAX_NETWORK_INPUT)))
        if n:
            bad.append((indices[j], n))
    with np.errstate(invalid="ignore"):
        peak = float(np.max(np.where(np.isfinite(batch), np.abs(batch), np.inf)))
    raise ValueError(
        f"Pixel values reach {peak:.3g} after scaling and normalisation in {_index_list(bad, len(raw_images), what)} "
        f"(the limit is {MAX_NETWORK_INPUT:.0e}; networks expect values of order 1). Rescale the images to a usual "
        "range (e.g. [0, 255] or [0, 1]) or build the preprocessor with a matching scale (1/255 for 8-bit, "
        "1/65535 for 16-bit images)."
    )


def check_depth_target(y, name: str = "depth maps") -> None:
    """Reject depth targets holding Inf or negative values (0 and NaN mean
    "no measurement" and are left out by the masked losses and metrics).

    ``y``: a batch array or a list of depth maps; the error names them by index.
    """
    arrays = [np.asarray(a) for a in (y if isinstance(y, (list, tuple)) else np.asarray(y))]
    for a in arrays:
        check_pixel_dtype(a.dtype, name)
    infinite = [(i, int(np.count_nonzero(np.isinf(a)))) for i, a in enumerate(arrays) if np.isinf(a).any()]
    if infinite:
        raise ValueError(f"{name}: Inf values in {_index_list(infinite, len(arrays), 'depth map')}; mark missing "
                         "measurements with 0 (or NaN), e.g. `y[~np.isfinite(y)] = 0`.")
    negative = [(i, int(np.count_nonzero(a < 0))) for i, a in enumerate(arrays) if (np.nan_to_num(a) < 0).any()]
    if negative:
        raise ValueError(f"{name}: negative depths in {_index_list(negative, len(arrays), 'depth map')}; depths are "
                         "distances (metres), 0 marks a missing measurement.")


def check_binary_mask(y, name: str = "masks") -> None:
    """Reject masks holding NaN/Inf or values outside [0, 1] (e.g. stored as 0/255).

    ``y``: a batch array (first axis: masks) or a list of masks; the error
    names the masks by index. Values strictly between 0 and 1 are accepted
    as soft labels.
    """
    masks = list(y) if isinstance(y, (list, tuple)) else None
    y = np.asarray(y) if masks is None else None
    if masks is None and y.size == 0 or masks is not None and not masks:
        return
    arrays = masks if masks is not None else (y if y.ndim > 1 else y[None])
    for a in ([y] if masks is None else masks):
        check_pixel_dtype(np.asarray(a).dtype, name)
    bad = _nonfinite_counts(arrays)
    if bad:
        raise ValueError(
            f"{name}: NaN or Inf values in {_index_list(bad, len(arrays), 'mask')}; masks must be 0 (background) "
            "or 1 (foreground). Fix or drop those masks, e.g. `y = (np.nan_to_num(y) > 0.5).astype('float32')`."
        )
    lo = min(float(np.min(a)) for a in arrays if np.size(a))
    hi = max(float(np.max(a)) for a in arrays if np.size(a))
    if hi > 1.0 or lo < 0.0:
        raise ValueError(
            f"{name} must hold values in [0, 1], found range [{lo:g}, {hi:g}]. "
            "Masks saved as 0/255 images must be binarised first, e.g. "
            "`y = (y >= 128).astype('float32')`."
        )
