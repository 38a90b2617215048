"""Backend-specific defaults of keras_sl models: ``jit_compile`` and the SL backbone layout.

TensorFlow's XLA Conv3D (``jit_compile=True``, which Keras' ``"auto"``
picks) runs 30-100x slower than TensorFlow's native kernel on the CPU, so
``"auto"`` means no XLA on TensorFlow (and on torch, whose inference runs a
captured graph instead). Process-wide tuning (glibc's allocator, JAX's CPU
dispatch) lives in :mod:`keras_sl.fast.runtime`; :func:`apply` and
:func:`tune_allocator` are the hooks models call when they compile and
predict.
"""

from __future__ import annotations

import keras

from keras_sl.fast import runtime


def resolve_jit_compile(jit_compile):
    """``"auto"`` -> False on TensorFlow and torch; JAX always uses XLA."""
    if jit_compile != "auto":
        return jit_compile
    if keras.backend.backend() in ("tensorflow", "torch"):
        return False
    return "auto"


def tune_allocator() -> bool:
    """:func:`keras_sl.fast.runtime.on_model_use`; returns whether glibc's
    thresholds are raised in this process."""
    runtime.on_model_use()
    return runtime.status()["malloc"]


def apply(jit_compile):
    """Process tuning on first use, then ``jit_compile`` resolved for the backend."""
    runtime.on_model_use()
    return resolve_jit_compile(jit_compile)


BACKBONE_LAYOUTS = ("auto", "lifted_first", "lifted_last", "channels_first")


def resolve_backbone_layout(layout: str = "auto") -> str:
    """Memory layout of an SL backbone; ``"auto"`` picks it for the backend.

    ``"lifted_last"`` on every backend: the lifted axis sits next to the
    channels, so the banded convolution folds it for free. On torch the
    convolutions then run on channels_last memory views (no copies,
    ``keras_sl.fast.native_layouts.torch_channels_last_view``), which PyTorch's CPU
    kernels run 3-5x faster than plain NCHW; this measured faster than
    ``"channels_first"`` for SL-UNet inference (benchmarks/README.md).
    """
    if layout not in BACKBONE_LAYOUTS:
        raise ValueError(
            f"backbone_layout must be one of {BACKBONE_LAYOUTS}, got {layout!r}."
        )
    if layout != "auto":
        return layout
    return "lifted_last"
