"""MobileNet v1 feature-pyramid encoder (FastDepth's encoder, dwofk/fast-depth)."""

from keras_sl.models.mobilenet.mobilenet_backbone import (
    FASTDEPTH_LEVELS,
    MOBILENET_V1_LAYERS,
    MOBILENET_V1_LEVELS,
    MobileNetV1Backbone,
    layer_channels,
    level_layers,
    load_mobilenet_v1_state,
    mobilenet_v1_state_shapes,
)

__all__ = [
    "FASTDEPTH_LEVELS",
    "MOBILENET_V1_LAYERS",
    "MOBILENET_V1_LEVELS",
    "MobileNetV1Backbone",
    "layer_channels",
    "level_layers",
    "load_mobilenet_v1_state",
    "mobilenet_v1_state_shapes",
]
