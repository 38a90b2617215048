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
