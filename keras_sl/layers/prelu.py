"""PReLU with one shared slope (``torch.nn.PReLU()``), in three elementwise passes."""

from __future__ import annotations

import keras
from keras import ops

from keras_sl.fast import dispatch


def prelu(x, alpha):
    """``x if x > 0 else alpha * x`` for a slope ``alpha`` that broadcasts to
    ``x``: ``x + (alpha - 1) * min(x, 0)``, three elementwise passes (see
    :class:`PReLU`); op ``"prelu"``."""
    return dispatch.run("prelu", _prelu, x, alpha)


def _prelu(x, alpha):
    return x + (alpha - 1) * ops.minimum(x, 0)


@keras.saving.register_keras_serializable(package="keras_sl")
class PReLU(keras.layers.Layer):
    """``x if x > 0 else alpha * x`` with one slope shared by every element.

    MONAI's default activation, computed as ``x + (alpha - 1) * min(x, 0)``:
    three passes over the activation instead of the five of Keras'
    ``relu(x) - alpha * relu(-x)``, which matters on the SL networks' large,
    memory-bound activations. Outputs and gradients equal PReLU's for every
    slope (at exactly ``x == 0`` the input gradient is the backend's choice
    for ``min``'s tie). The weight, ``alpha`` of shape ``(1,) * (rank + 1)``, matches
    ``keras.layers.PReLU(shared_axes=all)`` so checkpoints are unchanged.

    Example:
    >>> import numpy as np
    >>> keras.ops.convert_to_numpy(PReLU()(np.array([[-2.0, 3.0]], "float32")))
    array([[-0.5,  3. ]], dtype=float32)
    """

    def __init__(self, alpha_initializer=0.25, **kwargs):
        super().__init__(**kwargs)
        if isinstance(alpha_initializer, (int, float)):
            alpha_initializer = keras.initializers.Constant(float(alpha_initializer))
        self.alpha_initializer = keras.initializers.get(alpha_initializer)

    def build(self, input_shape):
        self.alpha = self.add_weight(
            name="alpha", shape=(1,) * (len(input_shape) - 1), initializer=self.alpha_initializer
        )

    def call(self, inputs):
        return prelu(inputs, ops.cast(self.alpha, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(alpha_initializer=keras.initializers.serialize(self.alpha_initializer))
        return config
