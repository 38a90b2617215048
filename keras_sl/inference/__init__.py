"""Inference beyond one pass of a resized image: sliding windows and test-time augmentation.

:func:`sliding_window_inference` predicts large images window by window
(constant or Gaussian blending, bounded memory, blended on the host);
:func:`with_flips` averages a network's outputs over flipped views. Tasks use
both through ``predict(..., window=..., tta=...)`` and the preprocessor's
``inference="window"`` (:class:`keras_sl.ImagePreprocessor`).
"""

from keras_sl.inference.sliding_window import (
    BLENDS,
    WindowSpec,
    blend_weights,
    parse_window_option,
    sliding_window_inference,
    window_grid,
    window_starts,
)
from keras_sl.inference.tta import TTA_MODES, flip_views, with_flips

__all__ = [
    "BLENDS",
    "TTA_MODES",
    "WindowSpec",
    "blend_weights",
    "flip_views",
    "parse_window_option",
    "sliding_window_inference",
    "window_grid",
    "window_starts",
    "with_flips",
]
