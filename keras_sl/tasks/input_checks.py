"""Validation at the door: what a task checks on host NumPy data before any backend op.

Every public entry point of a task (``predict``, ``predict_quality``,
``predict_slices``, ``segment``, ``fit``, ``evaluate``) runs these checks on
raw inputs first, so a user error gives one clear exception (TypeError for a
wrong dtype, ValueError otherwise) with the same text on every backend, and
the model is never touched by data it cannot take. Pixel checks (dtype,
NaN/Inf) live in :class:`keras_sl.preprocessing.ImagePreprocessor`; the
helpers here add what only the model knows (rank, channels, classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_sl.utils.checks import (
    check_binary_mask,
    check_depth_target,
    check_image_batch,
    check_pixel_dtype,
)


def is_empty(x) -> bool:
    """True for an empty list/tuple, an array or tensor with 0 rows, or a
    ``keras.utils.PyDataset`` without batches."""
    if isinstance(x, (list, tuple)):
        return len(x) == 0
    if isinstance(x, keras.utils.PyDataset):
        try:
            return len(x) == 0
        except (TypeError, NotImplementedError):
            return False
    shape = getattr(x, "shape", None)
    if shape is None or isinstance(x, (str, bytes)):
        return False
    try:
        return len(shape) > 0 and shape[0] == 0
    except TypeError:
        return False


def refuse_empty(x, *, method: str, argument: str = "x") -> None:
    """ValueError when training or evaluation data has no samples."""
    if x is not None and is_empty(x):
        raise ValueError(
            f"{method} got no samples ({argument} is empty). Pass at least one image (and its mask); check the "
            "filter or split that produced the data."
        )


def check_images_for_model(x, *, in_channels: int, rank: int, data_format: str, model_name: str) -> None:
    """Dtype, rank and channel count of raw images (a batch array or a list of images).

    Raises TypeError for non-pixel dtypes and ValueError for a wrong rank or
    channel count (with a hint when the batch looks like the other data format).
    """
    if isinstance(x, np.ndarray):
        check_pixel_dtype(x.dtype, "The images")
        check_image_batch(x.shape, in_channels=in_channels, multiples=(1,) * rank, data_format=data_format,
                          model_name=model_name)
        return
    layout = "(H, W, C)" if rank == 2 else f"({rank} spatial axes, channels)"
    if data_format == "channels_first":
        layout = "(C, H, W)" if rank == 2 else f"(channels, {rank} spatial axes)"
    for i, image in enumerate(x):
        image = np.asarray(image)
        check_pixel_dtype(image.dtype, f"Image {i} of the list")
        if image.ndim != rank + 1:
            hint = ""
            if image.ndim == rank:
                axis = -1 if data_format == "channels_last" else 0
                hint = (f" Add its channel axis with np.expand_dims(image, {axis})"
                        + (f" (and np.repeat(..., {in_channels}, axis={axis}) for grayscale)" if in_channels > 1
                           else "") + ".")
            elif image.ndim == rank + 2:
                hint = " Pass a batch as one array, or its images one by one in a list."
            raise ValueError(
                f"Image {i} of the list has shape {image.shape}, but {model_name} takes {rank}-D images: each list "
                f"item must be one image {layout}.{hint}"
            )
        try:
            check_image_batch((1, *image.shape), in_channels=in_channels, multiples=(1,) * rank,
                              data_format=data_format, model_name=model_name)
        except ValueError as error:
            raise ValueError(f"Image {i} of the list: {error}") from None


def empty_outputs(graph, x, *, n_outputs: int, lead_axes: int, rank: int, data_format: str, n_spatial: int = 1):
    """Outputs of ``graph`` for an empty batch, without running it: arrays
    with 0 rows whose spatial axes (of the first ``n_spatial`` outputs) are
    the input's (an empty list for a list)."""
    if isinstance(x, (list, tuple)):
        return tuple([] for _ in range(n_outputs))
    shape = tuple(x.shape)
    spatial = shape[1:1 + rank] if data_format == "channels_last" else shape[2:2 + rank]
    outs = []
    for k, tensor in enumerate(list(graph.outputs)[:n_outputs]):
        out = [0, *tensor.shape[1:]]
        if k < n_spatial:
            first = 1 + lead_axes if data_format == "channels_last" else 2 + lead_axes
            out[first:first + rank] = [int(s) for s in spatial]
        dtype = tensor.dtype if isinstance(tensor.dtype, str) else "float32"
        outs.append(np.zeros(tuple(int(d) for d in out), dtype=dtype))
    return tuple(outs)


#: What a task's targets are: ``"binary"`` (K = 1, values in [0, 1]),
#: ``"one_hot"`` (K > 1, K channels in [0, 1]), ``"sparse"`` (K > 1 with a
#: sparse loss: one channel of integer labels 0..K-1) or ``"regression"``
#: (K channels, any values; NaN marks missing pixels for the masked losses)
#: or ``"depth"`` (distances >= 0; 0 or NaN marks a missing measurement).
TARGET_KINDS = ("binary", "one_hot", "sparse", "regression", "depth")


def target_kind(activation, num_classes: int, loss=None) -> str:
    """The :data:`TARGET_KINDS` entry of a task from its activation, K and
    compiled loss (a loss whose name contains "sparse" takes label maps)."""
    if activation is None:
        return "regression"
    if num_classes == 1:
        return "binary"
    inner = getattr(loss, "loss", loss)  # SliceSupervision wraps the per-slice loss
    name = inner if isinstance(inner, str) else type(inner).__name__
    return "sparse" if "sparse" in str(name).lower() else "one_hot"


def _layout_of_targets(shape: tuple, spatial: tuple, *, num_classes: int, kind: str, data_format: str,
                       label: str) -> bool:
    """Check one target's shape (no batch axis) against its image's spatial
    size; True when the channel axis must be added."""
    rank = len(spatial)
    channels_wanted = 1 if kind in ("binary", "sparse") else num_classes
    add_axis = len(shape) == rank
    if not add_axis and len(shape) != rank + 1:
        raise ValueError(
            f"{label} has shape {shape}, but its image is {rank}-D with spatial size {spatial}: a target must be "
            f"{'(H, W, K)' if data_format == 'channels_last' else '(K, H, W)'} (or (H, W) for one channel)."
        )
    if add_axis:
        mask_spatial, channels = shape, None
    elif data_format == "channels_last":
        mask_spatial, channels = shape[:-1], shape[-1]
    else:
        mask_spatial, channels = shape[1:], shape[0]
    if tuple(mask_spatial) != tuple(spatial):
        hint = " (transposed? np.swapaxes(mask, 0, 1))" if tuple(mask_spatial[::-1]) == tuple(spatial) else ""
        raise ValueError(
            f"{label} has spatial size {tuple(mask_spatial)} but its image has {tuple(spatial)}{hint}; a mask must "
            "have its image's height and width (the preprocessor resizes both together)."
        )
    if add_axis and channels_wanted > 1:
        raise ValueError(
            f"{label} has no channel axis (shape {shape}), but the model predicts {num_classes} "
            + ("classes: one-hot encode label maps, e.g. y = keras.utils.to_categorical(y, "
               f"{num_classes}), or compile with a sparse loss." if kind == "one_hot"
               else f"output channels: pass targets with {num_classes} channels.")
        )
    if channels is not None and channels != channels_wanted:
        if kind == "one_hot" and channels == 1:
            fix = (f"one-hot encode label maps, e.g. y = keras.utils.to_categorical(y[..., 0], {num_classes}), or "
                   "compile with a sparse loss")
        elif kind == "binary":
            fix = f"pass one channel, e.g. y[..., :1], or build the model with num_classes={channels}"
        elif kind == "sparse":
            fix = ("pass label maps with one channel (the compiled loss is sparse), e.g. "
                   "np.argmax(y, axis=-1)[..., None]")
        else:
            fix = f"pass {channels_wanted} channel(s) or build the model for {channels}"
        raise ValueError(
            f"{label} has {channels} channel(s) (shape {shape}), but the model takes {channels_wanted} "
            f"({kind.replace('_', '-')} targets, {num_classes} predicted channel(s)); {fix}."
        )
    return add_axis


def _check_values(masks, kind: str, num_classes: int, name: str) -> None:
    if kind in ("binary", "one_hot"):
        check_binary_mask(masks, name)
    elif kind == "depth":
        check_depth_target(masks, name.replace("masks", "depth maps"))
    elif kind == "sparse":
        for i, labels in enumerate(masks):
            labels = np.asarray(labels, dtype="float64")
            if labels.size == 0:
                continue
            valid = (np.isfinite(labels).all() and labels.min() >= 0 and labels.max() <= num_classes - 1
                     and np.array_equal(labels, np.round(labels)))
            if not valid:
                raise ValueError(
                    f"{name}: label map {i} must hold integer class labels 0..{num_classes - 1}, found values in "
                    f"[{np.nanmin(labels):g}, {np.nanmax(labels):g}]"
                    f"{' and NaN/Inf' if not np.isfinite(labels).all() else ''}."
                )


def check_targets(masks: Sequence[np.ndarray], spatial_sizes: Sequence[tuple], *, num_classes: int, kind: str,
                  data_format: str) -> list[np.ndarray]:
    """Per-image targets checked against their images (``kind`` from
    :func:`target_kind`); ``(H, W)`` targets of a one-channel kind get their
    channel axis. Binary and one-hot masks must be finite and in [0, 1],
    sparse label maps integers in 0..K-1; regression targets may hold NaN
    (the masked losses skip it)."""
    out = []
    for i, (mask, spatial) in enumerate(zip(masks, spatial_sizes)):
        mask = np.asarray(mask)
        check_pixel_dtype(mask.dtype, f"Mask {i}")
        if _layout_of_targets(mask.shape, tuple(spatial), num_classes=num_classes, kind=kind,
                              data_format=data_format, label=f"Mask {i}"):
            mask = np.expand_dims(mask, -1 if data_format == "channels_last" else 0)
        out.append(mask)
    _check_values(out, kind, num_classes, "Training masks (y)")
    return out


def check_target_batch(y: np.ndarray, x_shape: tuple, *, num_classes: int, kind: str,
                       data_format: str) -> np.ndarray:
    """:func:`check_targets` for network-ready batches (``preprocess=False``):
    ``y`` must have ``x``'s batch and spatial size."""
    y = np.asarray(y)
    check_pixel_dtype(y.dtype, "The masks (y)")
    if len(y) != x_shape[0]:
        raise ValueError(f"x and y have different lengths: {x_shape[0]} images and {len(y)} masks.")
    spatial = tuple(x_shape[1:-1] if data_format == "channels_last" else x_shape[2:])
    if _layout_of_targets(tuple(y.shape[1:]), spatial, num_classes=num_classes, kind=kind, data_format=data_format,
                          label="The masks (y)"):
        y = np.expand_dims(y, -1 if data_format == "channels_last" else 1)
    _check_values(y, kind, num_classes, "Training masks (y)")
    return y
