"""Training callbacks."""

from keras_sl.callbacks.slice_selection import SliceSelection, select_slices, slice_losses

__all__ = ["SliceSelection", "select_slices", "slice_losses"]
