"""Turn predicted probabilities into label maps (paper eq. 10)."""

from __future__ import annotations

import numpy as np


def to_labels(probs, threshold: float = 0.5, data_format: str = "channels_last") -> np.ndarray:
    """Binary mask (K=1: ``probs > threshold``) or argmax labels (K>1).

    Returns ``uint8`` maps without a channel axis: ``(B, *spatial)``.

    Example:
    >>> to_labels(np.array([[[[0.2], [0.9]]]])).tolist()
    [[[0, 1]]]
    """
    probs = np.asarray(probs)
    axis = -1 if data_format == "channels_last" else 1
    if probs.shape[axis] == 1:
        return (np.squeeze(probs, axis) > threshold).astype("uint8")
    return np.argmax(probs, axis=axis).astype("uint8")
