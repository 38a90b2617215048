"""FastDepth (dwofk/fast-depth ``MobileNetSkipAdd``): the NNConv5 decoder, rank-generic
(SL-FastDepth at ``spatial_dims=3``), and the whole MobileNet v1 network."""

from keras_sl.models.fastdepth.fastdepth_decoder import (
    FASTDEPTH_CHANNELS,
    FASTDEPTH_DECODER_CHANNELS,
    FASTDEPTH_STRIDES,
    SL_FASTDEPTH_CHANNELS,
    SL_FASTDEPTH_DECODER_CHANNELS,
    SL_FASTDEPTH_DEPTH,
    FastDepthDecoder,
    fastdepth_decoder_state_shapes,
    load_fastdepth_decoder_state,
)
from keras_sl.models.fastdepth.fastdepth_model import (
    FastDepth,
    fastdepth_decoder_channels,
    load_fastdepth_state,
)

__all__ = [
    "FASTDEPTH_CHANNELS",
    "FASTDEPTH_DECODER_CHANNELS",
    "FASTDEPTH_STRIDES",
    "SL_FASTDEPTH_CHANNELS",
    "SL_FASTDEPTH_DECODER_CHANNELS",
    "SL_FASTDEPTH_DEPTH",
    "FastDepth",
    "FastDepthDecoder",
    "fastdepth_decoder_channels",
    "fastdepth_decoder_state_shapes",
    "load_fastdepth_decoder_state",
    "load_fastdepth_state",
]
