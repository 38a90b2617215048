"""HSNet's decoder and gated heads (baiboat/HSNet), exact."""

from keras_sl.models.hsnet.hsnet_decoder import HSNET_CHANNELS, UNUSED_PREFIXES, HSNetDecoder, load_hsnet_state

__all__ = ["HSNET_CHANNELS", "UNUSED_PREFIXES", "HSNetDecoder", "load_hsnet_state"]
