"""Encoder-decoder networks on feature pyramids, plain and Spatial Lifting."""

from keras_sl.models.encoder_decoder.pyramid_network import PyramidNeck, PyramidNetwork, ResizeToImage

__all__ = ["PyramidNeck", "PyramidNetwork", "ResizeToImage"]
