"""MiDaS v2.1 decoder (isl-org/MiDaS ``MidasNet``), rank-generic; SL-MiDaS at ``spatial_dims=3``."""

from keras_sl.models.midas.midas_blocks import FeatureFusionBlock, ResidualConvUnit
from keras_sl.models.midas.midas_decoder import MiDaSDecoder, load_midas_state

__all__ = ["MiDaSDecoder", "load_midas_state", "FeatureFusionBlock", "ResidualConvUnit"]
