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
    import os
    import subprocess
    import sys

    code = "import keras_sl; from keras_sl import backend_defaults as b; print(b._MALLOC_TUNED)"
    env = dict(os.environ, KERAS_BACKEND="jax")
    for setting, expected in (("1", "True"), ("0", "False")):
        env["KERAS_SL_MALLOC_TUNING"] = setting
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip().splitlines()[-1] == expected
