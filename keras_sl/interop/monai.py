"""Load a MONAI ``UNet`` state_dict into :class:`keras_sl.UNet`."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from keras_sl.blocks.convolution_block import ConvNormAct
from keras_sl.blocks.residual_unit import ResidualUnit
from keras_sl.layers.convolution import Convolution


def _to_numpy(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype="float32")


def _conv_weights(layer: Convolution, state: Mapping, prefix: str, used: set) -> None:
    w = _to_numpy(state[f"{prefix}.weight"])
    rank = layer.rank
    # torch conv: (out, in, *k); torch transposed conv: (in, out, *k).
    # keras_sl conv: (*k, in, out); keras_sl transposed conv: (*k, out, in).
    perm = (*range(2, rank + 2), 1, 0)
    kernel = np.transpose(w, perm)
    if tuple(kernel.shape) != tuple(layer.kernel.shape):
        raise ValueError(
            f"Shape mismatch for '{prefix}.weight': MONAI {w.shape} vs keras_sl "
            f"kernel {tuple(layer.kernel.shape)}. Build keras_sl.UNet with the same "
            "channels, strides, kernel sizes and num_res_units as the MONAI model."
        )
    layer.kernel.assign(kernel)
    used.add(f"{prefix}.weight")
    if layer.use_bias:
        layer.bias.assign(_to_numpy(state[f"{prefix}.bias"]))
        used.add(f"{prefix}.bias")


def _block_weights(block: ConvNormAct, state: Mapping, prefix: str, used: set) -> None:
    _conv_weights(block.conv, state, f"{prefix}.conv", used)
    if not block.conv_only:
        alpha = _to_numpy(state[f"{prefix}.adn.A.weight"])
        block.act.alpha.assign(alpha.reshape(block.act.alpha.shape))
        used.add(f"{prefix}.adn.A.weight")


def _unit_weights(unit: ResidualUnit, state: Mapping, prefix: str, used: set) -> None:
    for i, sub in enumerate(unit.units):
        _block_weights(sub, state, f"{prefix}.conv.unit{i}", used)
    if unit.residual is not None:
        _conv_weights(unit.residual, state, f"{prefix}.residual", used)


def load_monai_state_dict(model, state_dict: Mapping, strict: bool = True):
    """Copy a ``monai.networks.nets.UNet`` state_dict into a keras_sl UNet.

    Works for 1-D, 2-D and 3-D networks and for :class:`keras_sl.SLUNet`
    (the weights go to its 3-D backbone). Outputs agree with MONAI to float
    round-off (checked to 1e-4 in the tests).

    Args:
        model: a :class:`keras_sl.UNet` or :class:`keras_sl.SLUNet`.
        state_dict: ``monai_unet.state_dict()`` (torch tensors or arrays).
        strict: raise if the state_dict has keys that were not used.

    Example::

        net = monai.networks.nets.UNet(2, 3, 1, (32, 64), (2,), num_res_units=1)
        keras_net = keras_sl.UNet(2, 3, 1, (32, 64), (2,), num_res_units=1)
        load_monai_state_dict(keras_net, net.state_dict())
    """
    unet = getattr(model, "backbone", model)
    if not hasattr(unet, "monai_paths"):
        raise TypeError(
            f"Expected a keras_sl.UNet or keras_sl.SLUNet, got {type(model).__name__}."
        )
    used: set = set()
    try:
        for name, path in unet.monai_paths.items():
            layer = unet.get_layer(name)
            if isinstance(layer, ResidualUnit):
                _unit_weights(layer, state_dict, path, used)
            else:
                _block_weights(layer, state_dict, path, used)
    except KeyError as err:
        raise ValueError(
            f"The state_dict has no entry {err}; it does not come from a MONAI UNet "
            "with this configuration (check channels, strides and num_res_units)."
        ) from None
    unused = sorted(set(state_dict) - used)
    if strict and unused:
        raise ValueError(
            f"{len(unused)} state_dict entries were not used, e.g. {unused[:5]}. "
            "The MONAI model has a different architecture; pass strict=False to ignore."
        )
    return model
