"""SL-UNet under a mixed dtype policy: bfloat16 convolutions, float32 outputs."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_sl import SLUNet


@pytest.fixture
def mixed_bfloat16():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(previous)


def test_mixed_bfloat16_predicts_close_to_float32_and_trains(mixed_bfloat16, rng):
    x = rng.random((2, 32, 32, 3)).astype("float32")
    keras.config.set_dtype_policy("float32")
    reference = SLUNet(levels=3, lift_depth=4, num_selected=2)
    expected, q_expected = reference.predict_quality(x, verbose=0)
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = SLUNet(levels=3, lift_depth=4, num_selected=2)
    model.set_weights(reference.get_weights())
    assert model.backbone.get_layer("down0").units[0].conv.compute_dtype == "bfloat16"
    prediction, q = model.predict_quality(x, verbose=0)
    assert ops.convert_to_numpy(prediction).dtype == np.float32
    np.testing.assert_allclose(ops.convert_to_numpy(prediction), expected, atol=0.05)
    np.testing.assert_allclose(ops.convert_to_numpy(q), q_expected, atol=0.1)
    model.compile()
    history = model.fit(x, (x[..., :1] > 0.5).astype("float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.backbone.trainable_weights[0].dtype == "float32"  # float32 master weights
