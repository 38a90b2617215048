"""Backend defaults (keras_sl.backend_defaults): glibc allocator tuning where
the backend allocates its CPU buffers with malloc (torch, JAX)."""

import keras
import numpy as np
import pytest

from keras_sl import SLUNet, backend_defaults


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, option, value):
        self.calls.append((option, value))
        return 1


@pytest.fixture
def fake_libc(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(backend_defaults.ctypes, "CDLL", lambda *args, **kwargs: libc)
    monkeypatch.setattr(backend_defaults, "_MALLOC_TUNED", False)
    monkeypatch.setattr(backend_defaults.sys, "platform", "linux")
    monkeypatch.delenv("KERAS_SL_MALLOC_TUNING", raising=False)
    return libc


def test_tune_malloc_raises_the_mmap_and_trim_thresholds_once(fake_libc):
    assert backend_defaults.tune_malloc()
    assert dict(fake_libc.calls) == {-3: 32 * 1024 * 1024, -1: 1 << 30, -2: 256 * 1024 * 1024}
    assert backend_defaults.tune_malloc() and len(fake_libc.calls) == 3  # applied once


def test_tune_malloc_can_be_turned_off(fake_libc, monkeypatch):
    monkeypatch.setenv("KERAS_SL_MALLOC_TUNING", "0")
    assert not backend_defaults.tune_malloc()
    assert fake_libc.calls == []


def test_allocator_is_tuned_on_the_backends_that_allocate_with_malloc(fake_libc):
    expected = keras.backend.backend() in ("torch", "jax")
    assert backend_defaults.tune_allocator() == expected
    assert bool(fake_libc.calls) == expected


def test_predict_without_compile_applies_the_allocator_defaults(fake_libc):
    model = SLUNet(levels=2, lift_depth=4, num_selected=2, input_shape=(16, 16, 3))
    model.predict(np.zeros((1, 16, 16, 3), "float32"), verbose=0)
    assert backend_defaults._MALLOC_TUNED == (keras.backend.backend() in ("torch", "jax"))


def test_tune_on_import_only_on_jax(fake_libc):
    assert backend_defaults.tune_allocator_on_import() == (keras.backend.backend() == "jax")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras_sl tunes glibc at import on JAX only")
def test_importing_keras_sl_tuned_glibc_before_jax_allocated():
    """On JAX the thresholds only help if set before JAX's CPU client
    allocates, so ``import keras_sl`` sets them (unless opted out)."""
    code = "import keras_sl; from keras_sl import backend_defaults as b; print(b._MALLOC_TUNED)"
    for setting, expected in (("1", "True"), ("0", "False")):
        assert _last_line_on_jax(code, setting) == expected


def _last_line_on_jax(code: str, tuning: str) -> str:
    """The last line ``code`` prints in a fresh JAX process with
    ``KERAS_SL_MALLOC_TUNING=tuning``."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND="jax", KERAS_SL_MALLOC_TUNING=tuning)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_jax_cpu_heap_is_left_alone_off_jax_or_once_jax_has_run(fake_libc, monkeypatch):
    monkeypatch.setattr(backend_defaults, "_JAX_CPU_HEAP_TUNED", False)
    if keras.backend.backend() == "jax":
        keras.ops.convert_to_numpy(keras.ops.ones(2) + 1)  # the CPU client exists now
    assert not backend_defaults.tune_jax_cpu_heap()
    assert (-4, 0) not in fake_libc.calls


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras_sl changes JAX's CPU dispatch only on JAX")
def test_importing_keras_sl_makes_jax_reuse_its_large_cpu_buffers():
    """After ``import keras_sl`` on JAX, CPU computations run in the calling
    thread, and a main-thread buffer above glibc's mmap ceiling (XLA's
    per-call temporary buffer) comes back from the heap on the next call
    instead of being mapped and page-faulted again: counted as the minor
    page faults of allocating (glibc's malloc) and filling 384 MB, more than the 256 MB top pad, twice.
    ``KERAS_SL_MALLOC_TUNING=0`` leaves both as JAX and glibc have them."""
    code = (
        "import ctypes, resource, keras_sl\n"
        "from jax._src import xla_bridge\n"
        "libc = ctypes.CDLL('libc.so.6')\n"
        "libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]\n"
        "def fill_and_free(size=384 * 1024 * 1024):\n"
        "    p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)\n"
        "fill_and_free()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(2):\n"
        "    fill_and_free()\n"
        "faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 2\n"
        "print(xla_bridge._CPU_ENABLE_ASYNC_DISPATCH.value, keras_sl.backend_defaults._JAX_CPU_HEAP_TUNED, faults)\n"
    )
    results = {}
    for setting in ("1", "0"):
        asynchronous, tuned, faults = _last_line_on_jax(code, setting).split()
        results[setting] = (asynchronous, tuned, int(faults))
    pages = 384 * 1024 * 1024 // 4096
    assert results["1"][:2] == ("False", "True") and results["1"][2] < pages // 10  # reused
    assert results["0"][:2] == ("True", "False") and results["0"][2] > pages // 2  # mapped every time


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX dispatch hook exists on JAX only")
def test_jax_cpu_heap_leaves_a_jax_without_its_private_hooks_alone(fake_libc, monkeypatch):
    from jax._src import xla_bridge

    monkeypatch.setattr(backend_defaults, "_JAX_CPU_HEAP_TUNED", False)
    monkeypatch.delattr(xla_bridge, "backends_are_initialized")
    assert not backend_defaults.tune_jax_cpu_heap()
    assert (-4, 0) not in fake_libc.calls
