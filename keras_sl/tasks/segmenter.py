"""The plain (k-D) segmentation task: preprocessor -> backbone -> activation."""

from __future__ import annotations

import keras

from keras_sl.tasks.task import Task
from keras_sl.utils.layout import standardize_data_format


@keras.saving.register_keras_serializable(package="keras_sl")
class Segmenter(Task):
    """A k-D network as a segmentation model that takes raw images.

    ``model(x)`` returns the backbone's logits ``(B, *spatial, K)`` (what the
    loss sees); :meth:`predict` returns ``activation(logits)`` at each input's
    size and :meth:`segment` label maps. This is the 2-D twin of an
    :class:`SLSegmenter` built from the same rank-generic network.

    Args:
        backbone: a network ``(B, *spatial, C) -> (B, *spatial, K)``, e.g.
            ``keras_sl.UNet(spatial_dims=2, ...)``.
        activation: ``"auto"`` (sigmoid for K=1, softmax otherwise), a
            Keras activation name, or None for regression.
        preprocessor: :class:`keras_sl.preprocessing.ImagePreprocessor`
            (default: pad to the stride multiple only).

    Example:
    >>> import numpy as np, keras_sl
    >>> net = keras_sl.UNet(2, 3, 1, channels=(8, 16), strides=(2,), num_res_units=1)
    >>> model = keras_sl.Segmenter(net)
    >>> model.predict(np.zeros((1, 30, 30, 3), "uint8"), verbose=0).shape
    (1, 30, 30, 1)
    """

    def __init__(self, backbone, activation="auto", preprocessor=None, **kwargs):
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        data_format = standardize_data_format(getattr(backbone, "data_format", None))
        image_shape = tuple(backbone.input_shape[1:])
        inputs = keras.Input(shape=image_shape, name="image")
        outputs = backbone(inputs)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        channels = outputs.shape[-1 if data_format == "channels_last" else 1]
        self.num_classes = int(channels)
        if activation == "auto":
            activation = "sigmoid" if self.num_classes == 1 else "softmax"
        self._init_task(backbone, preprocessor, activation, data_format, image_shape)

    @property
    def stride_multiple(self) -> tuple[int, ...]:
        """Each image spatial size must be a multiple of this."""
        rank = len(self.backbone.input_shape) - 2
        return tuple(getattr(self.backbone, "stride_multiple", (1,) * rank))

    def count_params(self) -> int:
        return self.backbone.count_params()

    def _prediction_graph_outputs(self, image, kind: str):
        logits = self(image)
        if self.activation is None:
            return logits
        axis = -1 if self.data_format == "channels_last" else 1
        if self.activation == "softmax":
            return keras.layers.Softmax(axis=axis, dtype="float32", name="probabilities")(logits)
        return keras.layers.Activation(self.activation, dtype="float32", name="probabilities")(logits)

    def predict_logits(self, x, window=None, tta: str | None = None, window_batch_size: int | None = None,
                       **kwargs):
        """Logits at each input's size (resized bilinearly when the preprocessor
        resizes); raw images validated as in :meth:`predict`, ``window`` /
        ``tta`` as there (the blended, view-averaged logits)."""
        preprocess, pad = kwargs.pop("preprocess", True), kwargs.pop("pad", True)
        plan = self._host_plan(x, window, tta, window_batch_size)
        if plan is not None:
            (out,) = self._run_host(x, "logits", plan, preprocess=preprocess, pad=pad,
                                    batch_size=kwargs.get("batch_size"))
            return out
        (out,) = self._run_raw(super(Task, self).predict, x, preprocess=preprocess, pad=pad, kind="logits",
                               **kwargs)
        return out

    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "activation": self.activation,
            "preprocessor": self._preprocessor_config(),
            "name": self.name,
            "trainable": self.trainable,
        }
