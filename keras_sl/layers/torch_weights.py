"""PyTorch parameter layouts to keras_sl's, for converters of ``state_dict`` files.

PyTorch stores a ``Linear`` weight as ``(out, in)`` and a ``ConvNd`` weight as
``(out, in / groups, *kernel)``; keras_sl layers keep Keras' layouts,
``(in, out)`` and ``(*kernel, in / groups, out)``. The layers that port PyTorch
modules (:class:`~keras_sl.layers.BatchNorm`, :class:`~keras_sl.layers.LayerNorm`,
:class:`~keras_sl.layers.SpatialReductionAttention`) have a
``load_torch_state(state, prefix)`` method built on these helpers; it returns
the keys it used, so a converter can check that every key was used once.

Example:
>>> import numpy as np
>>> torch_linear_kernel(np.zeros((8, 3), "float32")).shape
(3, 8)
>>> torch_conv_kernel(np.zeros((8, 3, 5, 5), "float32")).shape
(5, 5, 3, 8)
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np


def to_numpy(value) -> np.ndarray:
    """A torch tensor (any device, with or without grad) or array as a float32
    NumPy copy (never a view of a torch buffer that PyTorch may update in place:
    JAX can alias NumPy memory)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.array(value, dtype="float32", copy=True)


def torch_linear_kernel(weight) -> np.ndarray:
    """``nn.Linear.weight`` ``(out, in)`` -> a Dense-style kernel ``(in, out)``."""
    weight = to_numpy(weight)
    if weight.ndim != 2:
        raise ValueError(f"A Linear weight has 2 axes, got shape {weight.shape}.")
    return np.ascontiguousarray(weight.T)


def torch_conv_kernel(weight) -> np.ndarray:
    """``nn.ConvNd.weight`` ``(out, in / groups, *k)`` -> ``(*k, in / groups, out)``."""
    weight = to_numpy(weight)
    if weight.ndim < 3:
        raise ValueError(f"A ConvNd weight has N + 2 axes, got shape {weight.shape}.")
    return np.ascontiguousarray(np.transpose(weight, (*range(2, weight.ndim), 1, 0)))


def assign_from_state(variable, state: Mapping, key: str, used: set, convert=to_numpy) -> None:
    """Assign ``convert(state[key])`` to ``variable`` (shapes must agree) and record ``key``."""
    if key not in state:
        raise KeyError(f"The state dict has no key {key!r}.")
    value = convert(state[key])
    if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(
            f"{key!r}: PyTorch gives shape {tuple(value.shape)} after conversion, the Keras "
            f"variable {variable.path!r} has {tuple(variable.shape)}."
        )
    variable.assign(value)
    used.add(key)


def _unwrap(state: Mapping) -> Mapping:
    """Training checkpoints nest the weights (``{"model": state_dict}``) or
    prefix them with ``module.`` (DataParallel)."""
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], Mapping) and not any(k.endswith(".weight") for k in state):
            state = state[key]
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read_state_dict(path_or_state) -> Mapping:
    """A flat ``state_dict`` from a mapping, an ``.npz`` archive or a PyTorch
    ``.pth`` file (``torch.load(map_location="cpu", weights_only=True)``),
    unwrapping ``{"model": ...}`` / ``{"state_dict": ...}`` and ``module.``
    prefixes.

    >>> read_state_dict({"model": {"module.fc.weight": 1}})
    {'fc.weight': 1}
    """
    if isinstance(path_or_state, Mapping):
        return _unwrap(path_or_state)
    path = os.fspath(path_or_state)
    if path.endswith(".npz"):
        with np.load(path) as archive:
            return _unwrap({k: archive[k] for k in archive.files})
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"Reading the PyTorch checkpoint {path!r} needs torch (`pip install torch`), or convert it "
            "to .npz first (numpy.savez(path, **{k: v.numpy() for k, v in state_dict.items()}))."
        ) from err
    return _unwrap(torch.load(path, map_location="cpu", weights_only=True))
