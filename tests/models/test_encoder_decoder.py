"""Encoder-decoder networks (PyramidNetwork) as plain and Spatial Lifting tasks."""

import keras
import numpy as np
import pytest

from harness import run_task_tests
from keras_sl.layers.convolution import Convolution
from keras_sl.models.backbone import PyramidBackbone
from keras_sl.models.encoder_decoder import PyramidNeck, PyramidNetwork, ResizeToImage
from keras_sl.models.unet import UNet
from keras_sl.preprocessing import ImagePreprocessor
from keras_sl.tasks import Segmenter, SLSegmenter


@keras.saving.register_keras_serializable(package="keras_sl_tests")
class ToyEncoder(PyramidBackbone):
    """Two strided convs per level: P2 (stride 4) and P3 (stride 8)."""

    def __init__(self, widths=(6, 10), input_shape=(None, None, 3), **kwargs):
        image = keras.Input(input_shape)
        x = Convolution(2, widths[0], 3, strides=2, name="stem")(image)
        p2 = Convolution(2, widths[0], 3, strides=2, name="p2")(keras.layers.ReLU()(x))
        p3 = Convolution(2, widths[1], 3, strides=2, name="p3")(keras.layers.ReLU()(p2))
        super().__init__(image, {"P3": p3, "P2": p2}, **kwargs)
        self.widths = tuple(widths)
        self.input_shape_arg = tuple(input_shape)

    def get_config(self):
        return {"widths": list(self.widths), "input_shape": list(self.input_shape_arg), "name": self.name}


def _sl_model():
    decoder = UNet(3, 8, 1, channels=(4, 4), strides=(2,), num_res_units=1, lifted_input=True)
    net = PyramidNetwork(ToyEncoder(), decoder, lift_depths=4, projection_channels=4, fuse=True)
    return SLSegmenter(net, num_selected=2, preprocessor=ImagePreprocessor(image_size=(32, 32)))


def _plain_model():
    decoder = UNet(2, 8, 1, channels=(4, 8), strides=(2,), num_res_units=1)
    net = PyramidNetwork(ToyEncoder(), decoder, projection_channels=4, fuse=True)
    return Segmenter(net, preprocessor=ImagePreprocessor(image_size=(32, 32)))


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (40, 36, 3), dtype="uint8"), rng.integers(0, 255, (32, 32, 3), dtype="uint8")]


def test_pyramid_backbone_levels_are_sorted_finest_first():
    encoder = ToyEncoder()
    assert encoder.pyramid_levels == ("P2", "P3")
    assert encoder.pyramid_channels == (6, 10)
    assert encoder.pyramid_strides == (4, 8)
    assert encoder.stride_multiple == (8, 8)
    assert list(encoder.pyramid_outputs) == ["P2", "P3"]


def test_sl_network_lifts_features_and_returns_slices_at_image_size():
    model = _sl_model()
    assert model.backbone.lifts_input and model.lift_depth == 4
    assert not any(layer.name == "lift" for layer in model.layers)  # the task does not lift the image
    logits = model(np.zeros((2, 32, 32, 3), "float32"))
    assert tuple(logits.shape) == (2, 4, 32, 32, 1)
    probs, q = model.predict_quality(_images(), verbose=0)
    assert [p.shape for p in probs] == [(40, 36, 1), (32, 32, 1)]
    assert len(q) == 2 and np.all(np.isfinite(np.concatenate([np.ravel(v) for v in q])))


def test_per_level_lift_depths_grow_with_the_decoder():
    """Depths [4, 2] (finest first): the lifted axis grows with the in-plane ones."""
    from keras_sl.layers.upsampling import UpsampleLike

    f1 = keras.Input((None, None, None, 4))
    f2 = keras.Input((None, None, None, 4))
    up = UpsampleLike(mode="nearest")([f2, f1])
    out = Convolution(3, 1, 1, name="head")(keras.layers.Add()([f1, up]))
    decoder = keras.Model([f1, f2], [out])
    neck = PyramidNeck(decoder, (6, 10), projection_channels=4, lift_depths=(4, 2))
    y = neck([np.ones((1, 8, 8, 6), "float32"), np.ones((1, 4, 4, 10), "float32")])
    assert tuple(y.shape) == (1, 4, 8, 8, 1)
    with pytest.raises(ValueError, match="one value per pyramid level"):
        PyramidNeck(decoder, (6, 10), lift_depths=(4, 2, 1))


def test_sl_task_rejects_a_different_lift_depth():
    decoder = UNet(3, 8, 1, channels=(4, 4), strides=(2,), num_res_units=1)
    net = PyramidNetwork(ToyEncoder(), decoder, lift_depths=4, projection_channels=4, fuse=True)
    with pytest.raises(ValueError, match="returns 4 slices"):
        SLSegmenter(net, lift_depth=16, num_selected=2)


def test_resize_to_image_keeps_the_lifted_axis():
    layer = ResizeToImage()
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 4, 2)).astype("float32")
    y = keras.ops.convert_to_numpy(layer([x, np.zeros((1, 16, 12, 3), "float32")]))
    assert y.shape == (1, 3, 16, 12, 2)
    # each slice is resized on its own (no mixing along the lifted axis)
    single = keras.ops.convert_to_numpy(ResizeToImage()([x[:, 1], np.zeros((1, 16, 12, 3), "float32")]))
    np.testing.assert_allclose(y[:, 1], single, atol=1e-6)


def test_sl_and_plain_encoder_decoder_tasks_round_trip(tmp_path):
    images = np.stack([_images()[0]] * 2)
    for name, make in (("sl", _sl_model), ("plain", _plain_model)):
        (tmp_path / name).mkdir()
        run_task_tests(make, images, tmp_path / name)


def test_sl_encoder_decoder_trains(tmp_path):
    model = _sl_model()
    model.compile()
    x = np.random.default_rng(1).random((4, 32, 32, 3)).astype("float32")
    y = (x[..., :1] > 0.5).astype("float32")
    history = model.fit(x, y, epochs=2, batch_size=2, verbose=0, preprocess=False)
    assert np.all(np.isfinite(history.history["loss"]))
