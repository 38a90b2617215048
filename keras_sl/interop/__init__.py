"""Interoperability with other frameworks."""

from keras_sl.interop.monai import load_monai_state_dict

__all__ = ["load_monai_state_dict"]
