"""ImagePreprocessor: raw images in, network inputs out, and back."""

import keras
import numpy as np
import pytest
from PIL import Image

from keras_sl.data.normalization import IMAGENET, normalize
from keras_sl.datasets.pipeline import resize_pair
from keras_sl.preprocessing import ImagePreprocessor


def _raw(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype="uint8")


def test_matches_the_training_pipeline_exactly():
    """Resize (PIL bilinear on uint8) + ImageNet statistics = what presets were trained with."""
    pre = ImagePreprocessor.from_normalization(IMAGENET, image_size=(64, 48))
    image = _raw(100, 70)
    expected = normalize(resize_pair(image, None, (64, 48))[0][None], IMAGENET)
    batch = pre.prepare(image[None])
    (indices, x), = batch.groups
    assert indices == [0]
    np.testing.assert_array_equal(x, expected)


def test_uint8_and_float_raw_values_agree():
    pre = ImagePreprocessor(image_size=(32, 32), scale=1 / 255, mean=[0.5] * 3, std=[0.25] * 3)
    image = _raw(40, 40)
    a = pre.prepare(image[None]).groups[0][1]
    b = pre.prepare(image[None].astype("float32")).groups[0][1]
    np.testing.assert_allclose(a, b, atol=0.02)  # PIL's 8-bit vs float resampling


def test_list_of_sizes_groups_and_restores():
    pre = ImagePreprocessor(scale=1 / 255)
    pre.pad_multiple = (16, 16)
    images = [_raw(30, 50), _raw(20, 20, 1), _raw(31, 49, 2)]
    batch = pre.prepare(images)
    shapes = sorted(x.shape for _, x in batch.groups)
    assert shapes == [(1, 32, 32, 3), (2, 32, 64, 3)]
    outputs = [np.zeros((*x.shape[1:3], 1)) for i in range(3) for idx, x in batch.groups if i in idx]
    restored = pre.restore(outputs, batch)
    assert isinstance(restored, list) and [r.shape for r in restored] == [(30, 50, 1), (20, 20, 1), (31, 49, 1)]


def test_restore_resizes_back_and_labels_use_nearest():
    pre = ImagePreprocessor(image_size=(16, 16))
    batch = pre.prepare(_raw(40, 24)[None])
    prob = np.zeros((16, 16, 1), "float32")
    prob[:, 8:] = 1.0
    back = pre.restore([prob], batch)
    assert back.shape == (1, 40, 24, 1) and 0 < back.mean() < 1
    labels = pre.restore([prob], batch, kind="labels")
    assert set(np.unique(labels)) == {0.0, 1.0}


def test_mask_resize_is_nearest_and_matches_loader():
    pre = ImagePreprocessor(image_size=(32, 32))
    image, mask = _raw(50, 60), (np.random.default_rng(1).random((50, 60, 1)) > 0.5).astype("float32")
    got = pre.prepare_pair(image, mask)
    ref = resize_pair(image, mask, (32, 32))
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


def test_channels_first():
    pre = ImagePreprocessor(image_size=(16, 16), scale=1 / 255, mean=[0.1, 0.2, 0.3], std=[1, 2, 3],
                            data_format="channels_first")
    image = _raw(20, 30)
    x = pre.prepare(np.moveaxis(image, -1, 0)[None]).groups[0][1]
    ref = ImagePreprocessor(image_size=(16, 16), scale=1 / 255, mean=[0.1, 0.2, 0.3], std=[1, 2, 3]).prepare(
        image[None]).groups[0][1]
    np.testing.assert_allclose(x, np.moveaxis(ref, -1, 1), atol=1e-6)


def test_config_round_trip_and_serialization():
    pre = ImagePreprocessor(image_size=(8, 12), interpolation="bicubic", scale=2.0, mean=[1, 2, 3],
                            std=[4, 5, 6], pad_mode="edge")
    assert ImagePreprocessor.from_config(pre.get_config()) == pre
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pre))
    assert again == pre and again is not pre


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=(0, 3)), "image_size"),
    (dict(interpolation="area"), "interpolation"),
    (dict(std=[1, 0, 1]), "std"),
])
def test_bad_arguments_say_what_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImagePreprocessor(**kwargs)


def test_channel_mismatch_names_the_fix():
    pre = ImagePreprocessor(mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.raises(ValueError, match="channels"):
        pre.prepare(np.zeros((1, 8, 8, 1), "uint8"))


def test_grayscale_float_resize_uses_float_planes():
    pre = ImagePreprocessor(image_size=(4, 4))
    image = np.linspace(0, 1, 64, dtype="float32").reshape(8, 8, 1)
    out = pre.resize(image)
    ref = np.asarray(Image.fromarray(image[..., 0], mode="F").resize((4, 4), Image.BILINEAR))
    np.testing.assert_array_equal(out[..., 0], ref)
