"""Process-wide tuning for CPU runs, applied on first use and reported once.

``import keras_sl`` changes nothing outside keras_sl. When a keras_sl model is
first built, compiled or run in a process (:func:`on_model_use`, called by
the models), or when you call :func:`tune_process`, keras_sl tunes the
process where that pays, i.e. on the CPU:

* torch and JAX allocate each activation with glibc's ``malloc``, which
  returns large buffers to the OS after every step and page-faults them back
  on the next one. Raising glibc's mmap / trim thresholds and top pad
  (``mallopt``) keeps them in the heap: an SL-UNet training step on torch
  took 2-3 s instead of 0.07 s without it.
* JAX (on top): XLA's per-call temporary buffer (63 MB for SL-UNet 5L/1Res
  inference at 256², batch 4; 283 MB in its train step) is above glibc's
  largest mmap threshold (32 MB), and JAX's CPU dispatch thread allocates
  from a 64 MB heap that cannot hold it, so it was mapped afresh on every
  call. keras_sl runs JAX CPU computations in the calling thread
  (``jax_cpu_enable_async_dispatch=False``) and never maps glibc buffers
  (``M_MMAP_MAX=0``): page faults per SL-UNet train step ~70,500 -> ~100,
  per inference call ~15,500 -> ~100. Either setting alone changes nothing.
  The price: JAX CPU work no longer overlaps the Python that dispatches it,
  and freed large buffers stay in the process.
* TensorFlow keeps its own buffer pool: nothing to do.

On JAX this only works before JAX's CPU client exists (before its first
computation, which building a model's variables is): tuned later, the faults
stayed (measured ~15,500 per inference call and ~71,000 per train step with
the thresholds set after the model was built). So the first keras_sl model
tunes the process when it is constructed, before it creates a variable; if
JAX already ran a computation, keras_sl leaves the process as it is (call
:func:`tune_process` first, before any JAX code, to get the tuning anyway).
On GPUs and TPUs nothing is tuned.

When it tunes, keras_sl prints one line on stderr, once per process (no
``logging`` or ``warnings`` configuration is touched).
``KERAS_SL_MALLOC_TUNING=0`` leaves the process alone; ``=1`` tunes without
the line (:mod:`keras_sl.config`).

Example:
>>> from keras_sl.fast import runtime
>>> sorted(runtime.status())
['jax_cpu_heap', 'malloc']
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

from keras_sl import config

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4

#: Backends whose CPU buffers come from glibc's malloc, one allocation per
#: activation per step (TensorFlow's allocator keeps its own pool).
MALLOC_TUNED_BACKENDS = ("torch", "jax")

_lock = threading.Lock()
_state = {"malloc": False, "jax_cpu_heap": False, "attempted": False, "reported": False}


def status() -> dict[str, bool]:
    """What keras_sl changed in this process: ``{"malloc": glibc thresholds
    raised, "jax_cpu_heap": JAX CPU computations in the calling thread with
    glibc buffers never mapped}``."""
    return {"malloc": _state["malloc"], "jax_cpu_heap": _state["jax_cpu_heap"]}


def _mallopt():
    """glibc's ``mallopt``, or None (opted out, not Linux, not glibc)."""
    if not config.malloc_tuning() or not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None  # not glibc (e.g. musl)


def tune_malloc() -> bool:
    """Keep large buffers in glibc's heap (Linux, glibc). Returns whether the
    thresholds are set (now or earlier)."""
    if _state["malloc"]:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # glibc's maximum
    ok &= mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    ok &= mallopt(_M_TOP_PAD, 256 * 1024 * 1024)
    _state["malloc"] = bool(ok)
    return _state["malloc"]


def _jax_client_exists() -> bool | None:
    """Whether JAX's backends are initialised (None: this JAX hides it)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return None


def _jax_accelerator_expected() -> bool:
    """Whether JAX will run on a GPU/TPU, judged without creating its clients
    (which would fix the CPU client's dispatch mode)."""
    import jax

    platforms = (jax.config.jax_platforms or "").split(",")[0].strip().lower()
    if platforms:
        return platforms != "cpu"
    try:
        from jax._src import xla_bridge

        xla_bridge._discover_and_register_pjrt_plugins()  # imports plugin modules only
        factories = set(xla_bridge._backend_factories)
    except (ImportError, AttributeError):
        return True  # cannot tell: leave JAX alone
    if "tpu" in factories:  # always registered; it needs libtpu to run
        import importlib.util

        if importlib.util.find_spec("libtpu") is None:
            factories.discard("tpu")
    return bool(factories - {"cpu"})


def tune_jax_cpu_heap() -> bool:
    """JAX on CPU: run computations in the calling thread and never map glibc
    buffers, so XLA's per-call temporary buffer, however large, is reused
    from the main heap call after call (see the module docstring).

    Only possible before JAX's CPU client exists: returns False (and changes
    nothing) once JAX has run a computation, off JAX, or on an accelerator.
    """
    if _state["jax_cpu_heap"]:
        return True
    import keras

    if keras.backend.backend() != "jax" or _jax_client_exists() is not False:
        return False
    mallopt = _mallopt()
    if mallopt is None or _jax_accelerator_expected():
        return False
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    _state["jax_cpu_heap"] = bool(mallopt(_M_MMAP_MAX, 0))
    return _state["jax_cpu_heap"]


def _pays() -> bool:
    """Whether this backend allocates CPU buffers with glibc and runs on the CPU."""
    import keras

    backend = keras.backend.backend()
    if backend not in MALLOC_TUNED_BACKENDS:
        return False
    if backend == "torch":
        import torch

        return not torch.cuda.is_available()
    # JAX: only before its CPU client exists (tuning later measured no effect).
    return _jax_client_exists() is False and not _jax_accelerator_expected()


def tune_process() -> dict[str, bool]:
    """Tune this process for keras_sl's CPU runs now (what pays on this
    backend, see the module docstring); returns :func:`status`.

    On JAX call it before any JAX computation. Models call
    :func:`on_model_use` themselves; this is for code that wants the tuning
    in place before it builds anything (benchmarks).
    """
    with _lock:
        _state["attempted"] = True
        if _mallopt() is not None and _pays():
            tune_jax_cpu_heap()  # first: it needs JAX's CPU client not to exist yet
            tune_malloc()
        return status()


def on_model_use() -> None:
    """Tune the process on the first use of a keras_sl model (construction,
    compile, predict); later calls return at once. Prints one line on stderr
    the first time it changes something, unless ``KERAS_SL_MALLOC_TUNING`` is
    set explicitly."""
    if _state["attempted"]:
        return
    done = tune_process()
    if any(done.values()) and not _state["reported"] and not config.malloc_tuning_explicit():
        _state["reported"] = True
        import keras

        what = "glibc malloc keeps large buffers (mallopt)"
        if done["jax_cpu_heap"]:
            what += "; JAX CPU computations run in the calling thread"
        print(f"keras_sl: tuned this process for {keras.backend.backend()} on the CPU: {what}. "
              "KERAS_SL_MALLOC_TUNING=0 turns this off, =1 silences this line.", file=sys.stderr)


class ProcessTuningMixin:
    """Calls :func:`on_model_use` before a model's constructor runs, i.e.
    before it creates a variable (the only time JAX's heap tuning works)."""

    def __new__(cls, *args, **kwargs):
        on_model_use()
        return super().__new__(cls, *args, **kwargs)
