"""Axis bookkeeping for channels_last / channels_first tensors."""

from __future__ import annotations

import keras


def standardize_data_format(data_format: str | None) -> str:
    """Return ``data_format`` or Keras' global image data format."""
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "data_format must be 'channels_last' or 'channels_first', got "
            f"{data_format!r}."
        )
    return data_format


def channel_axis(data_format: str) -> int:
    return -1 if data_format == "channels_last" else 1


def spatial_axes(rank: int, data_format: str) -> tuple[int, ...]:
    """Axes of the ``rank`` spatial dimensions of a batched tensor."""
    if data_format == "channels_last":
        return tuple(range(1, rank + 1))
    return tuple(range(2, rank + 2))


def normalize_tuple(value, rank: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * rank
    value = tuple(int(v) for v in value)
    if len(value) != rank:
        raise ValueError(
            f"`{name}` must be an int or a sequence of {rank} ints, got {value}."
        )
    return value
