"""Prediction without the unselected slices: the sum over the selected slices
moves into the SL network's last (linear) unit, exactly."""

import numpy as np
import pytest
from keras import ops

from fast_parity import assert_matches_reference
from keras_sl import SLUNet
from keras_sl.blocks import ResidualUnit
from keras_sl.layers import Convolution
from keras_sl.layers.convolution import conv as conv_nd
from keras_sl.models.sl_unet.selected_slice_sum import SelectedSliceSum


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def randomize(layer, rng, scale=0.3):
    for w in layer.weights:
        if w.trainable:
            w.assign((rng.normal(size=tuple(w.shape)) * scale).astype("float32"))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kernel_size, filters", [((3, 3), 1), ((3, 5), 2), ((3,), 4)])
def test_convolution_by_taps_equals_the_convolution(data_format, kernel_size, filters, rng):
    rank = len(kernel_size)
    spatial = (9, 7)[:rank]
    shape = (2, *spatial, 6) if data_format == "channels_last" else (2, 6, *spatial)
    x = rng.normal(size=shape).astype("float32")
    kernel = rng.normal(size=(*kernel_size, 6, filters)).astype("float32")

    def convolve(x, kernel):
        return conv_nd(x, kernel, (1,) * rank, (1,) * rank, 1, data_format)

    assert_matches_reference("conv", "conv_by_taps", convolve, [x, kernel], atol=1e-4)


def test_pointwise_product_as_a_1x1_convolution(rng):
    from keras_sl.fast.conv_by_taps import pointwise

    x = rng.normal(size=(2, 5, 6, 4)).astype("float32")
    matrix = rng.normal(size=(4, 9)).astype("float32")
    assert_matches_reference("pointwise", "torch_1x1_conv", pointwise, [x, matrix], atol=1e-4)


@pytest.mark.parametrize("lifted_axis_last", [False, True])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("filters, strides", [(1, 1), (3, 1), (40, 1), (2, 2)])
def test_lifted_sum_equals_the_weighted_sum_of_the_output(lifted_axis_last, data_format, filters, strides, rng):
    """Few outputs (taps path), many outputs (convolution path) and a strided layer."""
    conv = Convolution(3, filters, strides=strides, lifted_axis_last=lifted_axis_last, data_format=data_format)
    spatial = (8, 6, 10)  # lifted, H, W
    if lifted_axis_last:
        spatial = (6, 10, 8)
    shape = (2, *spatial, 3) if data_format == "channels_last" else (2, 3, *spatial)
    x = rng.normal(size=shape).astype("float32")
    conv(x)
    randomize(conv, rng)
    full = np_(conv(x))
    lifted = conv._lifted_position
    weights = rng.normal(size=(full.shape[lifted],)).astype("float32")
    # The remaining axes keep their order: the layer's layout without the lifted axis.
    expected = np.tensordot(full, weights, axes=([lifted], [0]))
    np.testing.assert_allclose(np_(conv.lifted_sum(x, weights)), expected, atol=2e-4)
    if lifted_axis_last == (data_format == "channels_last"):  # gradients: half the cases
        assert_matches_reference("lifted_sum", "summed_kernel", lambda t, w: conv.lifted_sum(t, w), [x, weights],
                                 conv.trainable_weights, atol=2e-4)


@pytest.mark.parametrize("add", ["identity", "add_input"])
def test_lifted_sum_of_the_identity_and_of_conv_plus_input(add, rng):
    conv = Convolution(3, 4, lifted_axis_last=True)
    x = rng.normal(size=(2, 6, 6, 8, 4)).astype("float32")
    conv(x)
    randomize(conv, rng)
    weights = np.array([0, 1, 0, 0, 1, 1, 0, 1], "float32")
    if add == "identity":
        expected = np.tensordot(x, weights, axes=([3], [0]))
        got = conv.lifted_sum(x, weights, identity=True)
    else:
        expected = np.tensordot(np_(conv(x)) + x, weights, axes=([3], [0]))
        got = conv.lifted_sum(x, weights, add_input=True)
    np.testing.assert_allclose(np_(got), expected, atol=2e-4)
    assert_matches_reference("lifted_sum", "summed_kernel",
                             lambda t: conv.lifted_sum(t, weights, identity=add == "identity",
                                                       add_input=add == "add_input"),
                             [x], conv.trainable_weights, atol=2e-4)


def test_lifted_sum_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="non-transposed"):
        Convolution(3, 2, transposed=True).lifted_sum(np.zeros((1, 4, 4, 4, 2), "float32"), np.ones(4))
    with pytest.raises(ValueError, match="input channels"):
        Convolution(3, 2).lifted_sum(np.zeros((1, 4, 4, 4, 3), "float32"), np.ones(4), identity=True)
    with pytest.raises(ValueError, match="stride 1"):
        Convolution(3, 2, strides=2).lifted_sum(np.zeros((1, 4, 4, 4, 2), "float32"), np.ones(2), add_input=True)
    with pytest.raises(ValueError, match="last_conv_only"):
        ResidualUnit(3, 2, subunits=1).lifted_sum(np.zeros((1, 4, 4, 4, 2), "float32"), np.ones(4))


@pytest.mark.parametrize("subunits, in_channels", [(1, 2), (2, 2), (1, 3), (2, 3)])
def test_residual_unit_lifted_sum(subunits, in_channels, rng):
    """Identity shortcut (one kernel, or a separate identity sum) and 1x1 shortcut."""
    unit = ResidualUnit(3, 2, subunits=subunits, last_conv_only=True, lifted_axis_last=True)
    x = rng.normal(size=(2, 8, 8, 8, in_channels)).astype("float32")
    unit(x)
    randomize(unit, rng)
    weights = np.zeros(8, "float32")
    weights[[1, 4, 6]] = 1.0
    expected = np.tensordot(np_(unit(x)), weights, axes=([3], [0]))
    np.testing.assert_allclose(np_(unit.lifted_sum(x, weights)), expected, atol=2e-4)


@pytest.mark.parametrize("layout", ["lifted_last", "lifted_first", "channels_first"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("num_res_units", [1, 2])
def test_sl_unet_prediction_skips_the_unselected_slices_exactly(layout, data_format, num_res_units, rng):
    model = SLUNet(levels=3, lift_depth=8, num_selected=3, num_res_units=num_res_units, backbone_layout=layout,
                   data_format=data_format,
                   input_shape=(None, None, 3) if data_format == "channels_last" else (3, None, None))
    randomize(model, rng)
    model.slice_head.set_selected([0, 3, 6])
    x = rng.normal(size=(2, 32, 32, 3) if data_format == "channels_last" else (2, 3, 32, 32)).astype("float32")
    full = np_(model.slice_head(model(x)))  # all m slices, then the head
    graph = model._inference_model(False)
    assert "selected_slice_sum" in [layer.name for layer in graph.layers]
    np.testing.assert_allclose(np_(graph(x)), full, atol=1e-5)
    np.testing.assert_allclose(model.predict(x, verbose=0), full, atol=1e-5)
    # A new selection and new weights are read at call time.
    model.slice_head.set_selected([1, 2, 7])
    randomize(model.backbone.layers[-1], rng)
    np.testing.assert_allclose(np_(graph(x)), np_(model.slice_head(model(x))), atol=1e-5)


def test_regression_head_averages_the_selected_slices(rng):
    model = SLUNet(levels=3, lift_depth=8, num_selected=3, activation=None)
    randomize(model, rng)
    x = rng.normal(size=(1, 16, 16, 3)).astype("float32")
    full = np_(model(x))[:, model.slice_head.get_selected()].mean(axis=1)
    np.testing.assert_allclose(model.predict(x, verbose=0), full, atol=1e-5)


def test_models_that_do_not_end_linearly_use_the_full_head():
    """Without residual units the last layer is a transposed convolution: the
    prediction graph runs the model and its head."""
    model = SLUNet(levels=3, lift_depth=8, num_selected=3, num_res_units=0)
    graph = model._inference_model(False)
    assert "selected_slice_sum" not in [layer.name for layer in graph.layers]
    with pytest.raises(ValueError, match="does not end linearly"):
        SelectedSliceSum(ResidualUnit(3, 2, subunits=1), model.slice_head)


@pytest.mark.parametrize("layout", ["lifted_last", "channels_first"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_softmax_head_normalises_the_class_axis_of_every_layout(layout, data_format, rng):
    """Multi-class: the softmax runs over the classes after the sum is in the
    head's layout, whatever layout the backbone stores."""
    model = SLUNet(num_classes=3, levels=3, lift_depth=8, num_selected=3, backbone_layout=layout,
                   data_format=data_format,
                   input_shape=(None, None, 3) if data_format == "channels_last" else (3, None, None))
    randomize(model, rng)
    x = rng.normal(size=(2, 16, 16, 3) if data_format == "channels_last" else (2, 3, 16, 16)).astype("float32")
    full = np_(model.slice_head(model(x)))
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs, full, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=-1 if data_format == "channels_last" else 1), 1.0, atol=1e-5)
