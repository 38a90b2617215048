"""Two convolutions of one input as one convolution with concatenated kernels
(``Convolution.call_jointly``, op ``"joint_convolution"``; a strided residual
unit's first convolution and its residual path): same outputs and gradients
as the separate convolutions on every path."""

import keras
import numpy as np
import pytest
from keras import ops

from fast_parity import assert_matches_reference
from keras_sl.blocks import ResidualUnit
from keras_sl.fast import dispatch
from keras_sl.layers import Convolution
from lifted_layouts import from_layout, to_layout

JOINT = ("joint_convolution", "concatenated_kernels")

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
    assert_matches_reference(*JOINT, lambda t: a.call_jointly(t, [b], add_bias=add_bias), [x],
                             a.trainable_weights + b.trainable_weights, atol=1e-4)
    with dispatch.forced(*JOINT):
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
    with dispatch.forced(*JOINT):
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
def test_strided_residual_unit_runs_its_two_convolutions_jointly(kwargs, layout, strategy, structure, rng):
    """Same outputs, input and weight gradients whether the first
    convolution and the residual path run as one convolution."""
    length = 2 if structure == "compact" else 8
    x = rng.normal(size=(2, length, 8, 6, 3)).astype("float32")
    if structure == "broadcast":
        x = np.repeat(x[:, :1], length, axis=1)
    x = to_layout(x, layout)
    fmt = "channels_first" if layout == "channels_first" else "channels_last"
    unit = ResidualUnit(3, 5, strides=2, data_format=fmt, strategy=strategy,
                        lifted_axis_last=layout == "lifted_last", **kwargs)
    unit(x)
    _randomize([unit], rng)
    # Dropout makes outputs random: compare in inference (training=False).
    assert_matches_reference(*JOINT, lambda t: unit(t, training=False), [x], unit.trainable_weights, atol=1e-4)


def test_unstrided_units_keep_their_convolutions_apart(rng):
    unit = ResidualUnit(3, 5, strides=1)  # residual path is a 1x1 convolution: a different kernel
    with dispatch.forced(*JOINT), dispatch.recording() as used:
        unit(np.zeros((1, 4, 6, 6, 3), "float32"))
    assert not any(op == "joint_convolution" for op, _ in used)


def test_joint_convolutions_run_where_they_pay():
    a, b = Convolution(3, 4, strides=2), Convolution(3, 6, strides=2)
    x = np.zeros((1, 4, 6, 6, 3), "float32")
    a(x), b(x)
    path = dispatch.resolve("joint_convolution", (a, b), x, (True, True))
    # JAX on CPU only: torch's inference graph got slower, TensorFlow did not change.
    assert (path is not None) == (keras.backend.backend() == "jax" and dispatch.device() == "cpu")
    with dispatch.forced(*JOINT):
        assert dispatch.resolve("joint_convolution", (a, b), x, (True, True)).name == JOINT[1]
