"""Which elementwise kernels torch models use: PyTorch's own one-pass ops, or
plain ``keras.ops`` formulas that a fusing compiler (inductor) merges."""

from __future__ import annotations

import contextlib

import keras

_FUSING_COMPILER = [False]


def torch_native_kernels() -> bool:
    """True on torch unless a graph is being traced for a fusing compiler.

    Eager and exported torch graphs run every op as its own pass, so one-pass
    PyTorch kernels (``prelu``, ``addcmul``) beat the ``keras.ops`` formulas;
    inductor fuses the formulas into the surrounding kernels but not those ops
    (SL-UNet 5L/1Res inference at 256², batch 4: 58 vs 37 ms compiled)."""
    return keras.backend.backend() == "torch" and not _FUSING_COMPILER[0]


@contextlib.contextmanager
def switched(flag: list, value: bool):
    """Set a module's one-element ``flag`` list to ``value`` for the block
    (the trace-time switches of keras_sl's layers), then restore it."""
    previous = flag[0]
    flag[0] = bool(value)
    try:
        yield
    finally:
        flag[0] = previous


def traced_for_fusion():
    """Trace with the plain formulas (the graph will be compiled by a fusing compiler)."""
    return switched(_FUSING_COMPILER, True)
