"""Backend-specific performance defaults applied by ``SLUNet.compile()``.

Two traps measured on CPU:

* TensorFlow: XLA's Conv3D (``jit_compile=True``, which Keras' ``"auto"``
  picks) runs 30-100x slower than TensorFlow's native kernel.
* PyTorch and JAX: glibc returns every large activation buffer to the OS
  after each step and page-faults it back on the next one; a training step
  of an SL-UNet on torch took 2-3 s instead of 0.07 s, and JAX's SL-UNet
  5L/1Res inference at 256^2 page-faulted ~15,500 times per call (57-61 ms;
  42-46 ms tuned, ~70-3,600 faults). Raising glibc's mmap/trim thresholds
  (``mallopt``) keeps the buffers in the heap. Buffers above glibc's
  largest threshold (32 MB: XLA's per-call temporary buffer, 283 MB in a
  JAX SL-UNet train step) still come from fresh mappings, so on JAX
  keras_sl also runs CPU computations in the calling thread and serves
  such buffers from its heap (:func:`tune_jax_cpu_heap`). Set
  ``KERAS_SL_MALLOC_TUNING=0`` to leave the allocator (and JAX's dispatch)
  alone.
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
_M_MMAP_MAX = -4
_MALLOC_TUNED = False
_JAX_CPU_HEAP_TUNED = False


def resolve_jit_compile(jit_compile):
    """``"auto"`` -> False on TensorFlow and torch; JAX always uses XLA."""
    if jit_compile != "auto":
        return jit_compile
    if keras.backend.backend() in ("tensorflow", "torch"):
        return False
    return "auto"


def _mallopt():
    """glibc's ``mallopt``, or None (tuning opted out, not Linux, not glibc)."""
    if os.environ.get("KERAS_SL_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None  # not glibc (e.g. musl)


def tune_malloc() -> bool:
    """Keep large buffers in glibc's heap (Linux only). Returns True if applied."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
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
    """:func:`tune_malloc` and :func:`tune_jax_cpu_heap` on JAX, called when
    ``keras_sl`` is imported; returns whether glibc's thresholds were set.

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
    tuned = tune_malloc()
    tune_jax_cpu_heap()
    return tuned


def tune_jax_cpu_heap() -> bool:
    """JAX on CPU: run computations in the calling thread
    (``jax_cpu_enable_async_dispatch=False``) and never map glibc buffers
    fresh (``M_MMAP_MAX=0``), so XLA's per-call temporary buffer, however
    large, comes from the main heap and is reused call after call.

    Each JAX call allocates one temporary buffer for the whole program (63 MB
    for SL-UNet 5L/1Res inference at 256², batch 4; 283 MB in its train
    step). Above glibc's 32 MB mmap ceiling it was mapped fresh and
    page-faulted on every call (~69,000 faults per train step); from a
    dispatch thread's 64 MB heap it could not be served at all. Measured
    (three alternating process pairs): train step 320 / 319 / 325 ->
    241 / 238 / 241 ms, faults 70,500 -> 100 per step; inference 60.1 /
    44.3 / 45.5 -> 44.0 / 45.2 / 46.2 ms (its heap-state-dependent slow
    mode gone). Either setting alone changed nothing. The price: JAX CPU
    computations no longer overlap with the Python that dispatches them,
    and freed large buffers stay in the process (its resident memory keeps
    its high-water mark; it did already with the raised trim threshold).

    Must run before JAX's CPU client exists: ``import keras_sl`` does it, and
    it does nothing (returns False) once JAX has run a computation.
    ``KERAS_SL_MALLOC_TUNING=0`` opts out.
    """
    global _JAX_CPU_HEAP_TUNED
    if _JAX_CPU_HEAP_TUNED:
        return True
    mallopt = _mallopt()
    if mallopt is None or keras.backend.backend() != "jax":
        return False
    import jax

    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return False  # the CPU client already dispatches asynchronously
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    except (ImportError, AttributeError):
        return False  # a JAX without these (private) hooks: leave it as it is
    _JAX_CPU_HEAP_TUNED = bool(mallopt(_M_MMAP_MAX, 0))
    return _JAX_CPU_HEAP_TUNED


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
