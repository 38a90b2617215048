"""XLA compiler options for the JAX train/test/predict steps of keras_sl models.

On the CPU, XLA hands reductions, element-wise chains and convolutions to
YNNPACK "library fusions" by default. For keras_sl models those run slower
than XLA's own kernels, the reductions most of all (the structure loss'
per-slice sums and the norms' statistics: one such reduction took 82 ms of
a 0.63 s SL-UNet train step, benchmarks/README.md). Our models therefore
compile their JAX step functions with the fusions off; the option is passed
per compilation (``jax.jit(..., compiler_options=...)``), so other JAX code
in the process keeps XLA's defaults.

Set ``KERAS_SL_XLA_CPU_LIBRARY_FUSIONS=1`` to keep XLA's defaults; an
``xla_cpu_experimental_ynn_fusion_type`` in ``XLA_FLAGS`` is always respected.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

import keras

from keras_sl import config
from keras_sl.utils.device import jax_cpu_only

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"


@functools.lru_cache(maxsize=None)
def _option_supported(name: str, value: str) -> bool:
    """Whether this jaxlib's XLA knows the option (older ones reject it)."""
    import jax

    try:
        jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(1.0).compile()
    except Exception:  # noqa: BLE001 - unknown option or no compiler_options support
        return False
    return True


def xla_cpu_compiler_options() -> dict[str, str]:
    """Compiler options keras_sl models pass to ``jax.jit`` (empty off JAX-CPU).

    Example:
    >>> options = xla_cpu_compiler_options()
    >>> options in ({}, {"xla_cpu_experimental_ynn_fusion_type": ""})
    True
    """
    if keras.backend.backend() != "jax" or not jax_cpu_only():
        return {}
    if config.xla_cpu_library_fusions():
        return {}
    if YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}  # the user chose; XLA reads it from the flags
    if not _option_supported(YNN_OPTION, ""):
        return {}
    return {YNN_OPTION: ""}


@contextlib.contextmanager
def keras_jit_options(options: dict[str, str]):
    """Make Keras' JAX trainer compile its step functions with ``options``.

    Keras builds the steps with ``jax.jit`` (module attribute ``jit`` of
    ``keras.src.backend.jax.trainer``); inside this context that call also
    passes ``compiler_options``. A no-op when ``options`` is empty or Keras
    jits through something else (Flax NNX).
    """
    trainer = sys.modules.get("keras.src.backend.jax.trainer")
    if not options or trainer is None:
        yield
        return
    import jax

    if getattr(trainer, "jit", None) is not jax.jit:
        yield
        return
    trainer.jit = functools.partial(jax.jit, compiler_options=dict(options))
    try:
        yield
    finally:
        trainer.jit = jax.jit


class XlaCompileOptionsMixin:
    """Builds Keras' JAX step functions with :func:`xla_cpu_compiler_options`.

    Mixed into keras_sl models before ``keras.Model``; nothing changes on
    TensorFlow, torch, or JAX on GPU/TPU.
    """

    def make_train_function(self, force=False):
        with keras_jit_options(xla_cpu_compiler_options()):
            return super().make_train_function(force)

    def make_test_function(self, force=False):
        with keras_jit_options(xla_cpu_compiler_options()):
            return super().make_test_function(force)

    def make_predict_function(self, force=False):
        with keras_jit_options(xla_cpu_compiler_options()):
            return super().make_predict_function(force)
