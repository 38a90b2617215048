"""Encoder-decoder networks on feature pyramids, plain and Spatial Lifting.

The names load lazily: :mod:`keras_sl.registry` imports the zoo's names
(``zoo.py``) without importing a backend.
"""

import importlib

_PUBLIC = {"PyramidNeck": "pyramid_network", "PyramidNetwork": "pyramid_network", "ResizeToImage": "pyramid_network"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"keras_sl.models.encoder_decoder.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'keras_sl.models.encoder_decoder' has no attribute {name!r}")
