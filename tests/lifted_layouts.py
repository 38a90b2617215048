"""Test helpers: move a logical (B, D, H, W, C) array to an SL backbone layout and back."""

import numpy as np


def to_layout(x, layout):
    """(B, D, H, W, C) -> the physical layout."""
    if layout == "lifted_last":
        return np.moveaxis(x, 1, 3)
    if layout == "channels_first":
        return np.moveaxis(x, -1, 1)
    return x


def from_layout(y, layout):
    """The physical layout -> (B, D, H, W, C)."""
    if layout == "lifted_last":
        return np.moveaxis(y, 3, 1)
    if layout == "channels_first":
        return np.moveaxis(y, 1, -1)
    return y
