"""Prediction-only graphs built from a task's layers."""

from __future__ import annotations

import keras

from keras_sl.models.inference_graph import InferenceGraphMixin
from keras_sl.models.xla_compile_options import XlaCompileOptionsMixin


class PredictionGraph(XlaCompileOptionsMixin, InferenceGraphMixin, keras.Model):
    """A functional image -> prediction (and Q) graph of a task's layers.

    Follows the task's torch inference graph mode unless compiled itself; not
    serialized (rebuilt from the task).
    """
