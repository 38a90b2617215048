"""Blocks built from keras_sl layers (MONAI's blocks, rank-generic)."""

from keras_sl.blocks.convolution_block import ConvNormAct
from keras_sl.blocks.residual_unit import ResidualUnit

__all__ = ["ConvNormAct", "ResidualUnit"]
