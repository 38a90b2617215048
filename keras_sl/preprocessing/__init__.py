"""Preprocessing that travels with every model and preset."""

from keras_sl.preprocessing.image_preprocessor import ImagePreprocessor, PreparedBatch

__all__ = ["ImagePreprocessor", "PreparedBatch"]
