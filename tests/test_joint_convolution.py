"""Two convolutions of one input as one convolution with concatenated kernels
(``Convolution.call_jointly``; a strided residual unit's first convolution
and its residual path): same outputs, gradients and training steps as the
separate convolutions on every path."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_sl.blocks import ResidualUnit
from keras_sl.layers import Convolution
from keras_sl.layers import convolution as convolution_module
from keras_sl.layers.convolution import joint_convolutions_pay
from lifted_layouts import from_layout, to_layout

LAYOUTS = [("lifted_first", "native"), ("lifted_first", "banded"), ("lifted_last", "banded"),
           ("channels_first", "native"), ("channels_first", "banded")]


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def _randomize(layers, rng):
    for layer in layers:
        for w in layer.weights:
            w.assign(rng.normal(size=tuple(w.shape)).astype("float32") * 0.3)


def _conv_pair(layout, strategy, **kwargs):
    fmt = "channels_first" if layout == "channels_first" else "channels_last"
    common = dict(kernel_size=3, strides=2, data_format=fmt, strategy=strategy,
                  lifted_axis_last=layout == "lifted_last", **kwargs)
    return Convolution(3, 4, name="a", **common), Convolution(3, 6, name="b", **common)


@pytest.mark.parametrize("layout,strategy", LAYOUTS)
@pytest.mark.parametrize("add_bias", [(True, True), (False, True)])
def test_call_jointly_gives_each_convolution_its_own_output(layout, strategy, add_bias, rng):
    x = to_layout(rng.normal(size=(2, 8, 10, 6, 3)).astype("float32"), layout)
    a, b = _conv_pair(layout, strategy)
    a(x), b(x)
    _randomize((a, b), rng)
    ya, yb = a.call_jointly(x, [b], add_bias=add_bias)
    np.testing.assert_allclose(np_(ya), np_(a(x, add_bias=add_bias[0])), atol=1e-4)
    np.testing.assert_allclose(np_(yb), np_(b(x)), atol=1e-4)
    assert from_layout(np_(yb), layout).shape == (2, 4, 5, 3, 6)


@pytest.mark.parametrize("kwargs,x_shape", [
    (dict(broadcast_input=True), (2, 8, 10, 6, 3)),
    (dict(lifted_pattern=(0, 0, 1, 1, 1, 1, 2, 2)), (2, 3, 10, 6, 3)),
])
def test_call_jointly_on_broadcast_and_compact_inputs(kwargs, x_shape, rng):
    x = rng.normal(size=x_shape).astype("float32")
    if kwargs.get("broadcast_input"):
        x = np.repeat(x[:, :1], x_shape[1], axis=1)
    a, b = _conv_pair("lifted_first", "banded", **kwargs)
    a(x), b(x)
    _randomize((a, b), rng)
    ya, yb = a.call_jointly(x, [b])
    np.testing.assert_allclose(np_(ya), np_(a(x)), atol=1e-4)
    np.testing.assert_allclose(np_(yb), np_(b(x)), atol=1e-4)


def test_call_jointly_says_what_differs():
    x = np.zeros((1, 8, 8, 8, 3), "float32")
    a = Convolution(3, 4, strides=2, name="first")
    for other in (Convolution(3, 4, strides=1), Convolution(3, 4, kernel_size=1, strides=2),
                  Convolution(3, 4, strides=2, strategy="native")):
        with pytest.raises(ValueError, match="cannot run as one convolution: they differ in"):
            a.call_jointly(x, [other])
    up = Convolution(3, 4, strides=2, transposed=True)
    with pytest.raises(ValueError, match="call transposed convolutions separately"):
        up.call_jointly(x, [Convolution(3, 4, strides=2, transposed=True)])
    with pytest.raises(ValueError, match="one flag per output"):
        a.call_jointly(x, [Convolution(3, 4, strides=2)], add_bias=(True,))


UNIT_CASES = [
    (dict(subunits=1), "lifted_first", "banded", None),
    (dict(subunits=2), "lifted_first", "native", None),
    (dict(subunits=2), "lifted_last", "banded", None),
    (dict(subunits=2), "channels_first", "banded", None),
    (dict(subunits=2, dropout=0.2), "lifted_first", "banded", None),
    (dict(subunits=1, broadcast_input=True), "lifted_first", "banded", "broadcast"),
    (dict(subunits=2, lifted_pattern=(0, 0, 0, 1, 1, 1, 1, 1)), "lifted_first", "banded", "compact"),
]


@pytest.mark.parametrize("kwargs,layout,strategy,structure", UNIT_CASES)
def test_strided_residual_unit_runs_its_two_convolutions_jointly(monkeypatch, kwargs, layout, strategy,
                                                                structure, rng):
    """Same outputs, input and weight gradients (through one SGD step) whether
    the first convolution and the residual path run as one convolution."""
    length = 2 if structure == "compact" else 8
    x = rng.normal(size=(2, length, 8, 6, 3)).astype("float32")
    if structure == "broadcast":
        x = np.repeat(x[:, :1], length, axis=1)
    x = to_layout(x, layout)
    fmt = "channels_first" if layout == "channels_first" else "channels_last"
    results = []
    for joint in (True, False):
        monkeypatch.setattr(convolution_module, "JOINT_CONVOLUTIONS", joint)
        keras.utils.set_random_seed(3)
        unit = ResidualUnit(3, 5, strides=2, data_format=fmt, strategy=strategy,
                            lifted_axis_last=layout == "lifted_last", **kwargs)
        model = keras.Sequential([keras.Input(x.shape[1:]), unit])
        assert unit._joint_first == joint
        out = np_(model(x, training=False))
        target = rng.normal(size=out.shape).astype("float32") if not results else results[0][2]
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse", jit_compile=False)
        if kwargs.get("dropout"):
            keras.utils.set_random_seed(4)  # the same dropout masks in both runs
        model.train_on_batch(x, target)
        results.append((out, model.get_weights(), target))
    (a, wa, _), (b, wb, _) = results
    np.testing.assert_allclose(a, b, atol=1e-4)
    for u, v in zip(wa, wb):
        np.testing.assert_allclose(u, v, atol=1e-4)


def test_unstrided_units_keep_their_convolutions_apart(monkeypatch):
    monkeypatch.setattr(convolution_module, "JOINT_CONVOLUTIONS", True)
    unit = ResidualUnit(3, 5, strides=1)  # residual path is a 1x1 convolution: a different kernel
    unit(np.zeros((1, 4, 6, 6, 3), "float32"))
    assert not unit._joint_first


def test_joint_convolutions_run_where_they_pay(monkeypatch):
    monkeypatch.setattr(convolution_module, "JOINT_CONVOLUTIONS", None)
    if keras.backend.backend() == "jax":
        import jax

        assert joint_convolutions_pay() == (jax.default_backend() == "cpu")
    else:  # torch's inference graph got slower, TensorFlow did not change
        assert not joint_convolutions_pay()
    monkeypatch.setattr(convolution_module, "JOINT_CONVOLUTIONS", True)
    assert joint_convolutions_pay()
