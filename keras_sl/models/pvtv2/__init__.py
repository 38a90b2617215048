"""PVTv2 (Pyramid Vision Transformer v2) encoder and its checkpoint converter."""

from keras_sl.models.pvtv2.pvtv2_backbone import PVTV2_VARIANTS, PVTv2Backbone, PVTv2Block, pool_tokens
from keras_sl.models.pvtv2.pvtv2_converter import (
    PVTv2LoadReport,
    convert_pvtv2_checkpoint,
    load_pvtv2_state,
    pvtv2_state_shapes,
    read_pvtv2_state,
)

__all__ = [
    "PVTV2_VARIANTS",
    "PVTv2Backbone",
    "PVTv2Block",
    "PVTv2LoadReport",
    "convert_pvtv2_checkpoint",
    "load_pvtv2_state",
    "pool_tokens",
    "pvtv2_state_shapes",
    "read_pvtv2_state",
]
