"""CASCADE decoder (SLDGroup/CASCADE), rank-generic; SL-CASCADE at ``spatial_dims=3``."""

from keras_sl.models.cascade.cascade_blocks import (
    AttentionGate,
    ChannelAttention,
    ConvBlock,
    SpatialAttention,
    UpConv,
)
from keras_sl.models.cascade.cascade_decoder import CASCADE, load_cascade_state

__all__ = ["CASCADE", "load_cascade_state", "AttentionGate", "ChannelAttention", "ConvBlock",
           "SpatialAttention", "UpConv"]
