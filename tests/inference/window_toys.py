"""Tiny task models for the window / TTA tests: a few weights, quick to compile on every backend."""

from __future__ import annotations

import keras
import numpy as np

import keras_sl


def _seeded(layer_weights_shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, shape).astype("float32") for shape in layer_weights_shapes]


def plain(kernel: int = 1, classes: int = 2, seed: int = 0, preprocessor=None, depth: bool = False):
    """A 2-D Segmenter (or DepthEstimator) around one ``kernel``×``kernel`` convolution
    (zero 'same' padding): translation equivariant; flip equivariant when ``kernel == 1``."""
    inp = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(classes, kernel, padding="same")
    net = keras.Model(inp, conv(inp))
    conv.set_weights(_seeded([w.shape for w in conv.get_weights()], seed))
    cls = keras_sl.DepthEstimator if depth else keras_sl.Segmenter
    return cls(net, preprocessor=preprocessor)


def lifted(kernel=(3, 1, 1), classes: int = 1, seed: int = 0, preprocessor=None, depth: bool = False,
           lift_depth: int = 4, num_selected: int = 2):
    """An SL task around one Conv3D over (slice, H, W): with kernel (3, 1, 1) the slices
    differ (zero padding along the lifted axis) while the network stays pointwise in
    space, hence translation and flip equivariant."""
    inp = keras.Input((lift_depth, None, None, 3))
    conv = keras.layers.Conv3D(classes, kernel, padding="same")
    net = keras.Model(inp, conv(inp))
    weights = _seeded([w.shape for w in conv.get_weights()], seed)
    if depth:  # positive depths, so that the depth Q is informative
        weights[1] = np.full_like(weights[1], 3.0)
    conv.set_weights(weights)
    cls = keras_sl.SLDepthEstimator if depth else keras_sl.SLSegmenter
    return cls(net, lift_depth=lift_depth, num_selected=num_selected, preprocessor=preprocessor)


def images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, h, w, 3)).astype("float32") * 2 - 1


def interior_mask(size, window, overlap) -> np.ndarray:
    """Pixels of one axis that are never on a window edge inside the image (for 3-wide kernels)."""
    from keras_sl.inference import window_starts

    good = np.ones(size, bool)
    for s in window_starts(size, window, overlap):
        if s > 0:
            good[s] = False
        if s + window < size:
            good[s + window - 1] = False
    return good
