"""Backend defaults (keras_sl.backend_defaults) and the process tuning of
keras_sl.fast.runtime, in this process with a fake glibc (the real effects
and ``import keras_sl`` are checked in fresh processes:
tests/test_import_side_effects.py)."""

import keras
import numpy as np
import pytest

from keras_sl import SLUNet, backend_defaults
from keras_sl.fast import runtime


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, option, value):
        self.calls.append((option, value))
        return 1


@pytest.fixture
def fake_libc(monkeypatch):
    """glibc's mallopt recorded, and keras_sl's tuning state as in a fresh process."""
    libc = _FakeLibc()
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda *args, **kwargs: libc)
    for key in ("malloc", "jax_cpu_heap", "attempted", "reported"):
        monkeypatch.setitem(runtime._state, key, False)
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.delenv("KERAS_SL_MALLOC_TUNING", raising=False)
    return libc


def _jax_has_run():
    if keras.backend.backend() == "jax":
        keras.ops.convert_to_numpy(keras.ops.ones(2) + 1)  # JAX's CPU client exists from here on


def test_jit_compile_auto_is_native_on_tensorflow_and_torch():
    expected = "auto" if keras.backend.backend() == "jax" else False
    assert backend_defaults.resolve_jit_compile("auto") == expected
    assert backend_defaults.resolve_jit_compile(True) is True


def test_backbone_layout_auto_and_errors():
    assert backend_defaults.resolve_backbone_layout("auto") == "lifted_last"
    assert backend_defaults.resolve_backbone_layout("channels_first") == "channels_first"
    with pytest.raises(ValueError, match="backbone_layout"):
        backend_defaults.resolve_backbone_layout("nhwc")


def test_tune_malloc_raises_the_mmap_and_trim_thresholds_once(fake_libc):
    assert runtime.tune_malloc()
    assert dict(fake_libc.calls) == {-3: 32 * 1024 * 1024, -1: 1 << 30, -2: 256 * 1024 * 1024}
    assert runtime.tune_malloc() and len(fake_libc.calls) == 3  # applied once
    assert runtime.status()["malloc"]


def test_tune_malloc_can_be_turned_off(fake_libc, monkeypatch):
    monkeypatch.setenv("KERAS_SL_MALLOC_TUNING", "0")
    assert not runtime.tune_malloc()
    assert fake_libc.calls == []


def test_nothing_is_tuned_off_linux(fake_libc, monkeypatch):
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.tune_process() == {"malloc": False, "jax_cpu_heap": False}
    assert fake_libc.calls == []


def test_tune_process_pays_on_torch_cpu_only(fake_libc):
    """torch on the CPU: glibc's thresholds; TensorFlow: nothing (its own
    pool); JAX once it has run: nothing (measured no effect that late)."""
    _jax_has_run()
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        expected = not torch.cuda.is_available()
    else:
        expected = False
    assert runtime.tune_process() == {"malloc": expected, "jax_cpu_heap": False}
    assert bool(fake_libc.calls) == expected


def test_first_model_use_tunes_once_and_reports_once(fake_libc, capsys):
    _jax_has_run()
    for _ in range(3):
        backend_defaults.apply("auto")
    tuned = runtime.status()["malloc"]
    assert len(fake_libc.calls) == (3 if tuned else 0)  # attempted once
    err = capsys.readouterr().err
    assert err.count("keras_sl: tuned this process") == (1 if tuned else 0)
    if tuned:
        assert "KERAS_SL_MALLOC_TUNING=0" in err


def test_an_explicit_setting_silences_the_report(fake_libc, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_SL_MALLOC_TUNING", "1")
    _jax_has_run()
    runtime.on_model_use()
    assert "keras_sl:" not in capsys.readouterr().err


def test_predict_without_compile_applies_the_process_tuning(fake_libc):
    model = SLUNet(levels=2, lift_depth=4, num_selected=2, input_shape=(16, 16, 3))
    runtime._state["attempted"] = False  # as if the model had been built before keras_sl's first use
    model.predict(np.zeros((1, 16, 16, 3), "float32"), verbose=0)
    assert runtime._state["attempted"]


def test_building_a_model_applies_the_process_tuning(fake_libc):
    SLUNet(levels=2, lift_depth=4, num_selected=2, input_shape=(16, 16, 3))
    assert runtime._state["attempted"]


def test_jax_cpu_heap_is_left_alone_off_jax_or_once_jax_has_run(fake_libc):
    _jax_has_run()
    assert not runtime.tune_jax_cpu_heap()
    assert (-4, 0) not in fake_libc.calls


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX dispatch hook exists on JAX only")
def test_jax_cpu_heap_leaves_a_jax_without_its_private_hooks_alone(fake_libc, monkeypatch):
    from jax._src import xla_bridge

    monkeypatch.delattr(xla_bridge, "backends_are_initialized")
    assert not runtime.tune_jax_cpu_heap()
    assert (-4, 0) not in fake_libc.calls
