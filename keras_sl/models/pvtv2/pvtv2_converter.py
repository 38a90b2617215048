"""Load original PVTv2 checkpoints (whai362/PVT ``pvt_v2_b*.pth``) into :class:`PVTv2Backbone`.

The ``state_dict`` keys are the original module paths (``patch_embed1.proj.weight``,
``block1.0.attn.kv.weight``, ``block1.0.mlp.dwconv.dwconv.weight``, ``norm1.bias``,
...). The classifier ``head.*`` is not part of the encoder: its keys are
ignored and reported; every other key must be used exactly once.

Example:
>>> import numpy as np
>>> encoder = PVTv2Backbone(embed_dims=(8, 8, 16, 16), num_heads=(1, 1, 2, 2), mlp_ratios=(2, 2, 2, 2),
...                         depths=(1, 1, 1, 1), sr_ratios=(8, 4, 2, 1))
>>> state = {k: np.zeros(s, "float32") for k, s in pvtv2_state_shapes(encoder).items()}
>>> state["head.weight"] = np.zeros((10, 16), "float32")
>>> report = load_pvtv2_state(encoder, state)
>>> len(report.used), report.ignored
(100, ('head.weight',))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from keras_sl.layers.torch_weights import assign_from_state, read_state_dict, torch_conv_kernel
from keras_sl.models.pvtv2.pvtv2_backbone import PVTv2Backbone

logger = logging.getLogger(__name__)

IGNORED_PREFIXES = ("head.",)  # the classifier: not part of the encoder


@dataclass(frozen=True)
class PVTv2LoadReport:
    """Keys a conversion used (each once) and ``head.*`` keys it ignored."""

    used: tuple[str, ...]
    ignored: tuple[str, ...]


def _blocks(backbone: PVTv2Backbone, stage: int):
    return [backbone.get_layer(f"block{stage}_{j}") for j in range(backbone.depths[stage - 1])]


def pvtv2_state_shapes(backbone: PVTv2Backbone) -> dict[str, tuple[int, ...]]:
    """Every original ``state_dict`` key the encoder reads, with its PyTorch
    shape (the classifier ``head`` excluded), in the original's order."""
    shapes: dict[str, tuple[int, ...]] = {}
    previous = backbone.in_channels
    for s, dim in enumerate(backbone.embed_dims, start=1):
        k = 7 if s == 1 else 3
        shapes.update({f"patch_embed{s}.proj.weight": (dim, previous, k, k), f"patch_embed{s}.proj.bias": (dim,),
                       f"patch_embed{s}.norm.weight": (dim,), f"patch_embed{s}.norm.bias": (dim,)})
        for j, block in enumerate(_blocks(backbone, s)):
            shapes.update(block.torch_state_shapes(f"block{s}.{j}."))
        shapes.update({f"norm{s}.weight": (dim,), f"norm{s}.bias": (dim,)})
        previous = dim
    return shapes


def _check_keys(backbone: PVTv2Backbone, state: Mapping) -> tuple[str, ...]:
    expected = pvtv2_state_shapes(backbone)
    ignored = tuple(k for k in state if k.startswith(IGNORED_PREFIXES))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and not k.startswith(IGNORED_PREFIXES)]
    if missing or unexpected:
        raise ValueError(
            f"The state dict does not fit {backbone.name} (embed_dims={list(backbone.embed_dims)}, "
            f"depths={list(backbone.depths)}, linear={backbone.linear}): "
            f"{len(missing)} missing key(s) {missing[:20]}{' ...' if len(missing) > 20 else ''}; "
            f"{len(unexpected)} unexpected key(s) {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}."
        )
    wrong = []
    for key, shape in expected.items():
        got = tuple(int(d) for d in np.shape(state[key]))
        if got != shape:
            wrong.append(f"{key}: {got} (expected {shape})")
    if wrong:
        raise ValueError(f"State dict shapes do not fit {backbone.name}: " + "; ".join(wrong[:20]))
    return ignored


def load_pvtv2_state(backbone: PVTv2Backbone, state: Mapping) -> PVTv2LoadReport:
    """Copy an original PVTv2 ``state_dict`` (key -> tensor/array) into ``backbone``.

    Raises ``ValueError`` naming any missing or unexpected key (``head.*`` is
    ignored) or wrong shape, before assigning anything. Returns the used and
    ignored keys.
    """
    ignored = _check_keys(backbone, state)
    parts: list[set[str]] = []
    for s in range(1, 5):
        used: set[str] = set()
        proj = backbone.get_layer(f"patch_embed{s}_proj")
        assign_from_state(proj.kernel, state, f"patch_embed{s}.proj.weight", used, torch_conv_kernel)
        assign_from_state(proj.bias, state, f"patch_embed{s}.proj.bias", used)
        parts.append(used)
        parts.append(backbone.get_layer(f"patch_embed{s}_norm").load_torch_state(state, f"patch_embed{s}.norm."))
        for j, block in enumerate(_blocks(backbone, s)):
            parts.append(block.load_torch_state(state, f"block{s}.{j}."))
        parts.append(backbone.get_layer(f"norm{s}").load_torch_state(state, f"norm{s}."))
    used_all = set().union(*parts)
    if sum(len(p) for p in parts) != len(used_all):
        raise RuntimeError("A state dict key was used by two layers (a converter bug).")
    expected = set(pvtv2_state_shapes(backbone))
    if used_all != expected:
        raise RuntimeError(f"Keys not loaded: {sorted(expected - used_all)}; loaded twice or extra: "
                           f"{sorted(used_all - expected)} (a converter bug).")
    return PVTv2LoadReport(used=tuple(sorted(used_all)), ignored=tuple(sorted(ignored)))


def read_pvtv2_state(path_or_state) -> Mapping:
    """A mapping, an ``.npz`` archive or a PyTorch ``.pth`` file as a flat
    ``state_dict`` (:func:`keras_sl.layers.torch_weights.read_state_dict`)."""
    return read_state_dict(path_or_state)


def convert_pvtv2_checkpoint(path_or_state, variant: str = "b2", **kwargs) -> PVTv2Backbone:
    """``PVTv2Backbone.from_variant(variant, **kwargs)`` with an original
    checkpoint's weights (``.pth``, ``.npz`` or a mapping). The
    :class:`PVTv2LoadReport` is kept as ``backbone.conversion_report``."""
    state = read_pvtv2_state(path_or_state)
    backbone = PVTv2Backbone.from_variant(variant, **kwargs)
    report = load_pvtv2_state(backbone, state)
    if report.ignored:
        logger.info("PVTv2 conversion ignored the classifier keys %s", list(report.ignored))
    backbone.conversion_report = report
    return backbone
