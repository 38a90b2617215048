"""PyTorch's one-pass kernels for element-wise steps (ops ``"scale"``,
``"prelu"``, ``"bce_with_logits"``).

Eager and exported torch graphs run every op as its own pass over memory,
so one-pass PyTorch kernels beat the ``keras.ops`` formulas there. Inductor
fuses the formulas into the surrounding kernels but not these ops (SL-UNet
5L/1Res inference at 256², batch 4: 58 vs 35 ms compiled), so a graph traced
for it (:func:`traced_for_fusion`) keeps the formulas.
"""

from __future__ import annotations

import contextlib
import math

import keras
from keras import ops

from keras_sl.fast.dispatch import register

_FUSING_COMPILER = [False]


@contextlib.contextmanager
def switched(flag: list, value: bool):
    """Set a module's one-element ``flag`` list to ``value`` for the block
    (the trace-time switches of :mod:`keras_sl.fast`), then restore it."""
    previous = flag[0]
    flag[0] = bool(value)
    try:
        yield
    finally:
        flag[0] = previous


def traced_for_fusion():
    """Trace with the plain formulas (the graph will be compiled by a fusing compiler)."""
    return switched(_FUSING_COMPILER, True)


def torch_native_kernels(*args, **kwargs) -> bool:
    """True on torch unless a graph is being traced for a fusing compiler."""
    return keras.backend.backend() == "torch" and not _FUSING_COMPILER[0]


def _on_torch(*args, **kwargs) -> bool:
    return keras.backend.backend() == "torch"


@register("scale", "torch_addcmul", backends=("torch",), applies=_on_torch, pays=torch_native_kernels,
          summary="(x - mean) * r as one addcmul pass (x * r - mean * r) instead of a subtraction and a "
                  "multiplication over the whole tensor.")
def torch_addcmul(x, mean, var, epsilon):
    import torch

    scale = ops.rsqrt(var + epsilon)
    return torch.addcmul(-mean * scale, x, scale)


@register("prelu", "torch_native_prelu", backends=("torch",),
          applies=lambda x, alpha: _on_torch() and math.prod(alpha.shape) == 1, pays=torch_native_kernels,
          summary="One-slope PReLU as PyTorch's one-pass kernel instead of three passes.")
def torch_native_prelu(x, alpha):
    import torch

    return torch.nn.functional.prelu(x, torch.reshape(alpha, (1,)))


@register("bce_with_logits", "torch_bce_kernel", backends=("torch",), pays=torch_native_kernels,
          summary="BCE with logits as PyTorch's one-pass kernel (weighted BCE + IoU and its gradient for "
                  "4x16 slices at 256^2: 30 -> 14 ms).")
def torch_bce_kernel(logits, target):
    return ops.binary_crossentropy(ops.broadcast_to(target, ops.shape(logits)), logits, from_logits=True)
