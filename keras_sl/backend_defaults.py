"""Backend-specific performance defaults applied by ``SLUNet.compile()``.

Two traps measured on CPU:

* TensorFlow: XLA's Conv3D (``jit_compile=True``, which Keras' ``"auto"``
  picks) runs 30-100x slower than TensorFlow's native kernel.
* PyTorch and JAX: glibc returns every large activation buffer to the OS
  after each step and page-faults it back on the next one; a training step
  of an SL-UNet on torch took 2-3 s instead of 0.07 s, and JAX's SL-UNet
  5L/1Res inference at 256^2 page-faulted ~15,500 times per call (57-61 ms;
  42-46 ms tuned, ~70-3,600 faults). Raising glibc's mmap/trim thresholds
  (``mallopt``) keeps the buffers in the heap. Set
  ``KERAS_SL_MALLOC_TUNING=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import keras

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MALLOC_TUNED = False


def resolve_jit_compile(jit_compile):
    """``"auto"`` -> False on TensorFlow and torch; JAX always uses XLA."""
    if jit_compile != "auto":
        return jit_compile
    if keras.backend.backend() in ("tensorflow", "torch"):
        return False
    return "auto"


def tune_malloc() -> bool:
    """Keep large buffers in glibc's heap (Linux only). Returns True if applied."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if os.environ.get("KERAS_SL_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl)
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # glibc's maximum
    ok &= mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    ok &= mallopt(_M_TOP_PAD, 256 * 1024 * 1024)
    _MALLOC_TUNED = bool(ok)
    return _MALLOC_TUNED


# Backends whose CPU buffers come from glibc's malloc, one allocation per
# activation per step (TensorFlow's allocator keeps its own pool: no change).
MALLOC_TUNED_BACKENDS = ("torch", "jax")


def tune_allocator() -> bool:
    """:func:`tune_malloc` where the backend allocates through glibc
    (:data:`MALLOC_TUNED_BACKENDS`); keras_sl models call it when they
    compile and before their first ``predict``."""
    if keras.backend.backend() not in MALLOC_TUNED_BACKENDS:
        return False
    return tune_malloc()


def tune_allocator_on_import() -> bool:
    """:func:`tune_malloc` on JAX, called when ``keras_sl`` is imported.

    On JAX it only helps before JAX's CPU client starts allocating: tuned
    after the first JAX computation of the process, SL-UNet 5L/1Res
    inference still page-faulted ~15,500 times per call (measured). So
    ``import keras_sl`` before running JAX code, or set the thresholds
    yourself (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``/
    ``MALLOC_TOP_PAD_`` in the environment); ``KERAS_SL_MALLOC_TUNING=0``
    opts out.
    """
    if keras.backend.backend() != "jax":
        return False
    return tune_malloc()


def apply(jit_compile):
    """Apply the defaults for the current backend; returns ``jit_compile``."""
    tune_allocator()
    return resolve_jit_compile(jit_compile)


BACKBONE_LAYOUTS = ("auto", "lifted_first", "lifted_last", "channels_first")


def resolve_backbone_layout(layout: str = "auto") -> str:
    """Memory layout of an SL backbone; ``"auto"`` picks it for the backend.

    ``"lifted_last"`` on every backend: the lifted axis sits next to the
    channels, so the banded convolution folds it for free. On torch the
    convolutions then run on channels_last memory views (no copies,
    ``keras_sl.layers.convolution._native_layout``), which PyTorch's CPU
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
