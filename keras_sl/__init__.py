"""keras_sl: Spatial Lifting (SL) dense prediction for Keras 3.

Importing keras_sl imports Keras and registers keras_sl's classes with Keras'
serialization; it changes nothing else in the process (no allocator, JAX or
logging settings: see :mod:`keras_sl.fast.runtime` for what the first model
does). Only the ``keras-sl`` command defers the import until its arguments
are parsed, so that ``keras-sl --help`` starts without a backend.

Example:
>>> import numpy as np, keras_sl
>>> model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2)
>>> model.predict(np.random.rand(1, 32, 32, 3), verbose=0).shape
(1, 32, 32, 1)
"""

import importlib
import os
import sys

from keras_sl.version import __version__

#: Public names of the package -> the module that defines them.
_PUBLIC = {
    "CASCADE": "keras_sl.models.cascade",
    "EMCAD": "keras_sl.models.emcad",
    "EfficientNetLiteBackbone": "keras_sl.models.efficientnet_lite",
    "FastDepth": "keras_sl.models.fastdepth",
    "FastDepthDecoder": "keras_sl.models.fastdepth",
    "HSNetDecoder": "keras_sl.models.hsnet",
    "MiDaSDecoder": "keras_sl.models.midas",
    "MobileNetV1Backbone": "keras_sl.models.mobilenet",
    "ImagePreprocessor": "keras_sl.preprocessing",
    "PVTv2Backbone": "keras_sl.models.pvtv2",
    "PyramidBackbone": "keras_sl.models.backbone",
    "PyramidNetwork": "keras_sl.models.encoder_decoder",
    "SLSegmenter": "keras_sl.tasks",
    "SLDepthEstimator": "keras_sl.tasks",
    "DepthEstimator": "keras_sl.tasks",
    "SLUNet": "keras_sl.models.sl_unet",
    "Segmenter": "keras_sl.tasks",
    "UNet": "keras_sl.models.unet",
    "profile": "keras_sl.profiler",
    "to_labels": "keras_sl.postprocess",
}
_SUBMODULES = (
    "callbacks", "config", "data", "depth_quality", "distribute", "explain", "inference", "interop", "layers", "losses",
    "metrics", "pqa", "preprocessing", "presets", "registry", "tasks",
)


def _load_public_api() -> None:
    """Import the public API (and so register every keras_sl Keras class)."""
    namespace = globals()
    for sub in _SUBMODULES:
        namespace[sub] = importlib.import_module(f"keras_sl.{sub}")
    for name, module in _PUBLIC.items():
        namespace[name] = getattr(importlib.import_module(module), name)


def __getattr__(name: str):
    # Only the ``keras-sl`` command gets here before _load_public_api ran:
    # import just what is asked for (keras_sl's own modules import each other).
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_sl.{name}")
    if name in _PUBLIC:
        value = globals()[name] = getattr(importlib.import_module(_PUBLIC[name]), name)
        return value
    raise AttributeError(f"module 'keras_sl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC) | set(_SUBMODULES))


def _running_the_cli() -> bool:
    """Whether this process is the ``keras-sl`` command (console script or
    ``python -m keras_sl.cli``), which loads the API after parsing its arguments."""
    script = os.path.basename(sys.argv[0]) if getattr(sys, "argv", None) else ""
    if script.split(".")[0] in ("keras-sl", "keras-sl-script"):
        return True
    argv = list(getattr(sys, "orig_argv", ()))
    return any(a == "-m" and argv[i + 1:i + 2] == ["keras_sl.cli"] for i, a in enumerate(argv))


if not _running_the_cli():
    _load_public_api()

__all__ = sorted(["__version__", *_PUBLIC, *_SUBMODULES])
