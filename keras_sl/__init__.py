"""keras_sl: Spatial Lifting (SL) dense prediction for Keras 3.

Example:
>>> import numpy as np, keras_sl
>>> model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2)
>>> model.predict(np.random.rand(1, 32, 32, 3), verbose=0).shape
(1, 32, 32, 1)
"""

from keras_sl import backend_defaults

# First, before anything can make JAX allocate (keras_sl.backend_defaults).
backend_defaults.tune_allocator_on_import()

from keras_sl import callbacks, data, distribute, interop, layers, losses, metrics, pqa, presets  # noqa: E402
from keras_sl import preprocessing, tasks  # noqa: E402
from keras_sl.models.sl_unet import SLUNet  # noqa: E402
from keras_sl.models.unet import UNet  # noqa: E402
from keras_sl.postprocess import to_labels  # noqa: E402
from keras_sl.preprocessing import ImagePreprocessor  # noqa: E402
from keras_sl.tasks import Segmenter, SLSegmenter  # noqa: E402
from keras_sl.profiler import profile  # noqa: E402
from keras_sl.version import __version__  # noqa: E402

__all__ = [
    "ImagePreprocessor",
    "SLSegmenter",
    "SLUNet",
    "Segmenter",
    "UNet",
    "__version__",
    "callbacks",
    "data",
    "distribute",
    "interop",
    "layers",
    "losses",
    "metrics",
    "pqa",
    "preprocessing",
    "presets",
    "profile",
    "tasks",
    "to_labels",
]
