"""The slice head's NumPy twin (what windows and TTA use) equals the Keras head on every backend."""

import keras
import numpy as np
import pytest

from keras_sl.layers.slice_head import SliceHead, host_activation
from keras_sl.pqa import quality, quality_np


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


@pytest.mark.parametrize("classes,data_format", [(1, "channels_last"), (3, "channels_last"), (1, "channels_first")])
def test_quality_np_equals_quality(classes, data_format):
    rng = np.random.default_rng(classes)
    logits = rng.normal(0.2, 1.0, (3, 6, 7, 5, classes)).astype("float32")
    logits[2] = -5.0  # every map empty: pairs of empty maps agree (Dice 1)
    if data_format == "channels_first":
        logits = np.moveaxis(logits, -1, 1)
    selected = [1, 2, 4]
    np.testing.assert_allclose(quality_np(logits, selected, data_format), _np(quality(logits, selected, data_format)),
                               atol=1e-6)
    logits[0].flat[3] = np.nan
    q = quality_np(logits, selected, data_format)
    assert np.isnan(q[0]) and np.isfinite(q[1:]).all()
    with pytest.raises(ValueError, match="unselected slice"):
        quality_np(logits, list(range(6)), data_format)


@pytest.mark.parametrize("activation,reduction", [("sigmoid", "sum"), ("softmax", "sum"), (None, "mean")])
def test_call_np_equals_call(activation, reduction):
    rng = np.random.default_rng(0)
    classes = 3 if activation == "softmax" else 1
    head = SliceHead(depth=5, num_selected=2, activation=activation, reduction=reduction, selected_slices=[0, 3])
    x = rng.normal(1.0, 0.5, (2, 5, 6, 4, classes)).astype("float32")
    np.testing.assert_allclose(head.call_np(x), _np(head(x)), atol=1e-6)
    if activation is None:
        got = head.call_np(x, return_quality=True, return_uncertainty=True)
        want = head(x, return_quality=True, return_uncertainty=True)
    else:
        got, want = head.call_np(x, return_quality=True), head(x, return_quality=True)
        with pytest.raises(ValueError, match="return_uncertainty is for depth heads"):
            head.call_np(x, return_uncertainty=True)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, _np(b), atol=1e-5)
        assert a.dtype == np.float32
    np.testing.assert_allclose(head.quality_np(x), _np(want[1]), atol=1e-5)


def test_host_activation():
    y = np.array([[-2.0, 0.0, 3.0]], "float32")
    np.testing.assert_allclose(host_activation(y, "sigmoid"), 1 / (1 + np.exp(-y)), atol=1e-7)
    np.testing.assert_allclose(host_activation(y, "softmax").sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(host_activation(y, None), y)
    np.testing.assert_allclose(host_activation(y, "tanh"), np.tanh(y), atol=1e-6)  # other names: Keras
