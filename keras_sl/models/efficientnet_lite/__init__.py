"""EfficientNet-Lite (lite0 .. lite4) feature-pyramid encoder with ImageNet weights."""

from keras_sl.models.efficientnet_lite.efficientnet_lite_backbone import (
    EFFICIENTNET_LITE_VARIANTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetLiteBackbone,
    SameConv2D,
    block_specs,
)
from keras_sl.models.efficientnet_lite.efficientnet_lite_converter import (
    efficientnet_lite_imagenet,
    imagenet_logits,
    load_efficientnet_lite_state,
)

__all__ = [
    "EFFICIENTNET_LITE_VARIANTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EfficientNetLiteBackbone",
    "SameConv2D",
    "block_specs",
    "efficientnet_lite_imagenet",
    "imagenet_logits",
    "load_efficientnet_lite_state",
]
