"""Input normalisation as stored in preset metadata."""

from __future__ import annotations

import numpy as np

from keras_sl.preprocessing import ImagePreprocessor

#: Images already in [0, 1]; no mean/std shift.
IDENTITY = {"scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
#: uint8 images, ImageNet statistics.
IMAGENET = {"scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def normalize(images, spec: dict | None) -> np.ndarray:
    """``(images * scale - mean) / std`` per channel (channels_last).

    Example:
    >>> [round(float(v), 3) for v in normalize(np.full((1, 1, 1, 3), 255, "uint8"), IMAGENET).ravel()]
    [2.249, 2.429, 2.64]
    """
    if not spec:
        return np.asarray(images, dtype="float32")
    return ImagePreprocessor.from_normalization(spec, data_format="channels_last").normalize(images)
