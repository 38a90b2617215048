"""Data helpers: the embedded synthetic dataset and normalisation."""

from keras_sl.data.normalization import IDENTITY, normalize
from keras_sl.data.synthetic import make_cells

__all__ = ["IDENTITY", "make_cells", "normalize"]
