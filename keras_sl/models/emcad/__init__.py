"""EMCAD decoder (Rahman et al., CVPR 2024) and its blocks, rank-generic."""

from keras_sl.models.emcad.emcad_blocks import CAB, EUCB, LGAG, MSCB, SAB, channel_shuffle
from keras_sl.models.emcad.emcad_decoder import EMCAD, load_emcad_state

__all__ = ["EMCAD", "load_emcad_state", "MSCB", "EUCB", "LGAG", "CAB", "SAB", "channel_shuffle"]
