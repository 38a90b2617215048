"""``import keras_sl`` changes nothing outside keras_sl; the process tuning
(keras_sl.fast.runtime) happens when the first keras_sl model is built, is
reported once, and ``KERAS_SL_MALLOC_TUNING=0`` opts out. Each check runs in
a fresh process of this session's backend."""

import json
import os
import subprocess
import sys

import keras
import pytest

BACKEND = keras.backend.backend()

# Records glibc's mallopt calls (ctypes.CDLL is what keras_sl.fast.runtime loads
# glibc with) without changing the allocator; prints what changed after
# `import keras_sl` (the whole public API touched) and after one model is built.
_SPY = """
import ctypes, json, sys
calls = []

class SpyCDLL(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            return lambda option, value: calls.append([option, value]) or 1
        return super().__getattr__(name)

ctypes.CDLL = SpyCDLL

def state():
    jax = sys.modules.get("jax")
    return {"mallopt": list(calls),
            "async_dispatch": None if jax is None else bool(jax.config.read("jax_cpu_enable_async_dispatch"))}

import keras_sl
for name in keras_sl.__all__:
    getattr(keras_sl, name)
out = {"import": state()}
keras_sl.UNet(2, 3, 1, channels=(4, 8), strides=(2,), input_shape=(16, 16, 3))
out["model"] = state()
print(json.dumps(out))
"""


def _run(code: str, tuning: str | None) -> tuple[dict, str]:
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("KERAS_SL_MALLOC_TUNING", None)
    if tuning is not None:
        env["KERAS_SL_MALLOC_TUNING"] = tuning
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _tuned_here() -> bool:
    """Whether keras_sl tunes a fresh process of this backend (CPU torch or JAX)."""
    if BACKEND == "torch":
        import torch

        return not torch.cuda.is_available()
    if BACKEND == "jax":
        import jax

        return jax.default_backend() == "cpu"
    return False


def test_import_changes_nothing_and_the_first_model_tunes_once():
    out, err = _run(_SPY, tuning=None)
    assert out["import"]["mallopt"] == []
    assert out["import"]["async_dispatch"] in (None, True)  # JAX's default, or JAX not even imported
    tuned = _tuned_here()
    options = {option for option, _ in out["model"]["mallopt"]}
    if tuned:
        assert {-1, -2, -3} <= options  # trim threshold, top pad, mmap threshold
    else:
        assert options == set()
    if BACKEND == "jax" and tuned:
        assert -4 in options and out["model"]["async_dispatch"] is False  # M_MMAP_MAX=0, synchronous CPU
    else:
        assert -4 not in options and out["model"]["async_dispatch"] in (None, True)
    report = [line for line in err.splitlines() if line.startswith("keras_sl:")]
    assert len(report) == (1 if tuned else 0), err[-2000:]
    if tuned:
        assert "KERAS_SL_MALLOC_TUNING=0" in report[0]


@pytest.mark.parametrize("tuning", ["0", "1"])
def test_an_explicit_setting_opts_out_or_silences(tuning):
    out, err = _run(_SPY, tuning=tuning)
    assert not [line for line in err.splitlines() if line.startswith("keras_sl:")]
    if tuning == "0":
        assert out["model"]["mallopt"] == [] and out["model"]["async_dispatch"] in (None, True)
    else:
        assert bool(out["model"]["mallopt"]) == _tuned_here()


@pytest.mark.skipif(BACKEND != "jax", reason="keras_sl changes JAX's CPU dispatch only on JAX")
def test_first_model_makes_jax_reuse_its_large_cpu_buffers():
    """After the first keras_sl model is built on JAX (the real glibc now),
    CPU computations run in the calling thread, and a main-thread buffer
    above glibc's mmap ceiling (like XLA's per-call temporary buffer) comes
    back from the heap on the next call instead of being mapped and
    page-faulted again: counted as the minor page faults of allocating
    (glibc's malloc) and filling 384 MB, more than the 256 MB top pad,
    twice. With ``KERAS_SL_MALLOC_TUNING=0`` both stay as JAX and glibc have them."""
    code = (
        "import ctypes, json, resource, keras_sl\n"
        "import jax\n"
        "keras_sl.UNet(2, 3, 1, channels=(4, 8), strides=(2,), input_shape=(16, 16, 3))\n"
        "libc = ctypes.CDLL('libc.so.6')\n"
        "libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]\n"
        "def fill_and_free(size=384 * 1024 * 1024):\n"
        "    p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)\n"
        "fill_and_free()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(2):\n"
        "    fill_and_free()\n"
        "faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 2\n"
        "print(json.dumps([jax.config.read('jax_cpu_enable_async_dispatch'), faults]))\n"
    )
    pages = 384 * 1024 * 1024 // 4096
    (asynchronous, faults), _ = _run(code, tuning="1")
    assert asynchronous is False and faults < pages // 10  # reused
    (asynchronous, faults), _ = _run(code, tuning="0")
    assert asynchronous is True and faults > pages // 2  # mapped every time
