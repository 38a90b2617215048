"""Behaviour shared by keras_sl models: input checks, config, presets."""

from __future__ import annotations

import keras

from keras_sl.fast.runtime import ProcessTuningMixin
from keras_sl.models.inference_graph import InferenceGraphMixin
from keras_sl.models.xla_compile_options import XlaCompileOptionsMixin
from keras_sl.presets.preset_io import PresetMixin
from keras_sl.utils.checks import check_image_batch


class SLModel(ProcessTuningMixin, PresetMixin, XlaCompileOptionsMixin, InferenceGraphMixin, keras.Model):
    """Base of keras_sl models built with the functional API.

    Subclasses set ``in_channels``, ``data_format`` and a ``stride_multiple``
    property (the multiple every input spatial size must be). On torch,
    ``predict`` replays a captured graph
    (:mod:`keras_sl.models.inference_graph`); on JAX-CPU the step functions
    compile with :mod:`keras_sl.models.xla_compile_options`.
    """

    def _check(self, shape, divisible: bool = True) -> None:
        """Raise a helpful error for a batch shape the network cannot take."""
        multiples = self.stride_multiple
        check_image_batch(
            shape,
            in_channels=self.in_channels,
            multiples=multiples if divisible else (1,) * len(multiples),
            data_format=self.data_format,
            model_name=self.name,
        )

    def __call__(self, inputs, *args, **kwargs):
        shape = getattr(inputs, "shape", None)
        if shape is not None:
            self._check(shape)
        return super().__call__(inputs, *args, **kwargs)

    @classmethod
    def from_config(cls, config):
        return cls(**config)
