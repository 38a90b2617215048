"""Initializers drawn on the host with NumPy.

Keras' random initializers run as backend ops; on JAX each new weight shape
compiles its own random kernel (seconds each on a busy CPU), which dominates
building a model of many differently shaped layers (decoders, encoders). These
draw with NumPy instead: same distributions, reproducible after
``keras.utils.set_random_seed`` (which seeds NumPy's global generator).
"""

from __future__ import annotations

import math

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="keras_sl")
class HostInitializer(keras.initializers.Initializer):
    """Random kernels drawn with NumPy, so JAX compiles no random kernel per
    weight shape (seconds each on a busy CPU).

    ``kind="normal"``: N(0, ``stddev``), the original's
    ``init_weights('normal')`` (std 0.02). ``kind="torch_default"``:
    PyTorch's default ``nn.ConvNd`` weight init, ``U(+-1/sqrt(fan_in))`` with
    ``fan_in`` the product of all but the last axis of a Keras kernel.
    ``seed=None`` draws a fresh seed from NumPy's global generator (seeded
    by ``keras.utils.set_random_seed``) at every call.

    Example:
    >>> w = HostInitializer(seed=0)((3, 3, 1, 8))
    >>> w.shape, w.dtype, bool(abs(w).max() < 0.2)
    ((3, 3, 1, 8), dtype('float32'), True)
    """

    def __init__(self, kind: str = "normal", stddev: float = 0.02, seed: int | None = None):
        if kind not in ("normal", "torch_default"):
            raise ValueError(f"kind must be 'normal' or 'torch_default', got {kind!r}.")
        self.kind = kind
        self.stddev = float(stddev)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        seed = self.seed if self.seed is not None else np.random.randint(2**31 - 1)
        rng = np.random.default_rng(seed)
        if self.kind == "normal":
            values = rng.normal(0.0, self.stddev, shape)
        else:
            bound = 1.0 / math.sqrt(max(1, math.prod(shape[:-1])))
            values = rng.uniform(-bound, bound, shape)
        return values.astype(keras.backend.standardize_dtype(dtype or keras.config.floatx()))

    def get_config(self):
        return {"kind": self.kind, "stddev": self.stddev, "seed": self.seed}


