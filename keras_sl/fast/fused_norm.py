"""Instance-norm statistics and fusion (ops ``"instance_norm"``,
``"standardize"``, ``"moments"`` of :mod:`keras_sl.layers.instance_norm`).

- ``xla_compiled`` (TensorFlow, CPU): the whole norm (statistics, scale,
  PReLU, residual sum) as one XLA-compiled function inside the otherwise
  non-XLA graph; TensorFlow runs each elementwise op as its own pass
  otherwise (norm + PReLU of a (4, 128, 128, 8, 8) tensor: 7.5 -> 2.7 ms).
  Exporters that cannot read XLA calls turn it off (:func:`xla_fusion`), as
  does ``KERAS_SL_XLA_FUSION=0``. The first call per input shape compiles
  (SL-UNet 5L/1Res first call 0.4 -> 1.4 s at 256²).
- ``wide_rows`` (JAX, TensorFlow): moments over the leading spatial axes as
  one pass of ``E[x²] - E[x]²`` over a ``(B, N / f, f * C)`` view with rows of
  >= 128 values: XLA's CPU reductions over a middle axis with few channels
  are several times slower ((4, 131072, 8): 4.0 -> 0.55 ms on JAX). Clamped
  at 0, as Keras' torch backend does.
- ``rows`` (torch): the same ``(B, N, C)`` view, ``keras.ops.moments``.
- ``trailing_layer_norm`` (all): channels-first norms through
  ``keras.ops.layer_normalization`` over the trailing axes (torch's fused
  ``layer_norm`` kernel).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_sl import config
from keras_sl.fast import dispatch
from keras_sl.fast.dispatch import register
from keras_sl.fast.torch_kernels import switched

_XLA_FUSION = [True]


def xla_fusion(enabled: bool):
    """Turn the XLA-compiled norm of the TensorFlow backend on or off while
    models are traced (a context manager; exporters turn it off)."""
    return switched(_XLA_FUSION, enabled)


def _xla_fusion_on(*args) -> bool:
    return _XLA_FUSION[0] and config.xla_fusion()


@register("instance_norm", "xla_compiled", backends=("tensorflow",), devices=("cpu",),
          applies=lambda *args: keras.backend.backend() == "tensorflow", pays=_xla_fusion_on,
          summary="TensorFlow CPU: statistics, scale, PReLU and residual sum as one XLA-compiled function "
                  "(norm + PReLU of a (4, 128, 128, 8, 8) tensor: 7.5 -> 2.7 ms).")
def xla_compiled(layer, inputs, shift, prelu_alpha, residual, training):
    import tensorflow as tf

    # Compiled functions take tensors, not Keras variables.
    args = tuple(a if a is None or isinstance(a, bool) else tf.convert_to_tensor(a)
                 for a in (inputs, shift, prelu_alpha, residual, training))
    if getattr(layer, "_xla_normalize", None) is None:
        normalize = layer.normalize  # a closure: tf.function must not trace the layer

        def fused(*args_and_state):
            return normalize(*args_and_state[:-1])

        layer._xla_normalize = tf.function(fused, jit_compile=True, autograph=False)
    # The dispatch state is part of the trace's key: a forced path retraces.
    return layer._xla_normalize(*args, dispatch.state())


def wide_fold(length: int | None, channels: int) -> int:
    """How many neighbouring positions to fold into the channels so that a
    reduction over ``length`` runs on rows of >= 128 contiguous values
    (1 when ``length`` is unknown)."""
    fold = 1
    if length is None:
        return fold
    while fold * channels < 128 and length % (2 * fold) == 0:
        fold *= 2
    return fold


def _leading(x, axes) -> bool:
    """``axes`` are the axes right after the batch, with static axes kept behind them."""
    kept = x.shape[len(axes) + 1:]
    return tuple(axes) == tuple(range(1, len(axes) + 1)) and bool(kept) and None not in kept


def _row_view(x, axes):
    """``(B, N, K)`` view of ``x`` reduced over its leading ``axes``, and the
    shape its statistics take (kept dims)."""
    kept = tuple(x.shape[len(axes) + 1:])
    return ops.reshape(x, (ops.shape(x)[0], -1, math.prod(kept))), (-1,) + (1,) * len(axes) + kept


@register("moments", "wide_rows", backends=("jax", "tensorflow"), applies=_leading,
          summary="Moments over leading axes as one pass over rows of >= 128 values ((4, 131072, 8) on JAX: "
                  "4.0 -> 0.55 ms).")
def wide_rows(x, axes):
    rows, stats_shape = _row_view(x, axes)
    batch, channels = ops.shape(rows)[0], rows.shape[2]
    fold = wide_fold(rows.shape[1], channels)
    wide = ops.reshape(rows, (batch, -1, fold * channels)) if fold > 1 else rows

    def mean_of(t):
        return ops.mean(ops.reshape(ops.mean(t, axis=1), (batch, fold, channels)), axis=1, keepdims=True)

    mean = mean_of(wide)
    var = ops.maximum(mean_of(ops.square(wide)) - ops.square(mean), 0.0)
    return ops.reshape(mean, stats_shape), ops.reshape(var, stats_shape)


@register("moments", "rows", backends=("torch",), applies=_leading,
          summary="torch: moments over leading axes on the (B, N, C) view (one reduction axis).")
def rows(x, axes):
    flat, stats_shape = _row_view(x, axes)
    mean, var = ops.moments(flat, axes=[1], keepdims=True)
    return ops.reshape(mean, stats_shape), ops.reshape(var, stats_shape)


def _trailing(x, axes, epsilon, shift, training) -> bool:
    return tuple(axes) == tuple(range(len(x.shape) - len(axes), len(x.shape)))


@register("standardize", "trailing_layer_norm", applies=_trailing,
          summary="Channels-first norms (normalised axes trailing) through keras.ops.layer_normalization: "
                  "one fused kernel where the backend has one (torch's layer_norm).")
def trailing_layer_norm(x, axes, epsilon, shift, training):
    if shift is not None and training:  # keeps the shift's (zero) gradient in the training graph
        x = x + shift
    return ops.layer_normalization(x, axis=list(axes), epsilon=epsilon)
