"""Compact lifted activations: equal slices stored once, outputs and
gradients identical to running on every slice."""

import keras
import numpy as np
import pytest
from keras import ops

from fast_parity import assert_matches_reference
from keras_sl import SLUNet
from keras_sl.blocks import ConvNormAct, ResidualUnit
from keras_sl.layers import Convolution, InstanceNorm, LiftedSlices
from keras_sl.layers.lifted_structure import (
    canonical, conv_output_pattern, merge_patterns, representatives, slice_counts,
)
from keras_sl.profiler import profile
from lifted_layouts import to_layout as _to_layout

LAYOUTS = ["lifted_first", "lifted_last", "channels_first"]


def _lifted_axis(layout):
    return {"lifted_first": 1, "lifted_last": 3, "channels_first": 2}[layout]


def _fmt(layout):
    return "channels_first" if layout == "channels_first" else "channels_last"


def _compact(pattern, rng, shape=(2, 7, 6, 3)):
    """A compact tensor (B, n, H, W, C) and its full (B, len(pattern), H, W, C) twin."""
    stored = rng.standard_normal((shape[0], len(set(pattern)), *shape[1:])).astype("float32")
    return stored, stored[:, list(pattern)]


def _compact_matches_full(layer, reference, stored, full, layout):
    """Give ``layer`` the reference's weights and run it on the compact input:
    its output, expanded by its output pattern, equals the reference's on the
    full input. Returns (compact input, compact output, reference output)."""
    expected = ops.convert_to_numpy(reference(full))
    xin = _to_layout(stored, layout)
    layer.build(xin.shape)
    layer.set_weights(reference.get_weights())
    y = ops.convert_to_numpy(layer(xin))
    assert y.shape == layer.compute_output_shape(xin.shape)
    np.testing.assert_allclose(np.take(y, list(layer.output_pattern), axis=_lifted_axis(layout)),
                               _to_layout(expected, layout), atol=1e-5)
    return xin, y, expected


def test_patterns_of_the_sl_unet_encoder():
    lifted = (0,) * 16
    first, band = conv_output_pattern(lifted, k=3, s=2, p=1)
    assert first == (0, 1, 1, 1, 1, 1, 1, 1)  # only slice 0 saw the padding
    assert band.shape == (3, 1, 2) and band[:, 0, 0].tolist() == [0, 1, 1] and band[:, 0, 1].tolist() == [1, 1, 1]
    same, _ = conv_output_pattern(first, k=3, s=1, p=1)
    assert same == (0, 1, 2, 2, 2, 2, 2, 3)
    assert conv_output_pattern((0,), k=3, s=1, p=1)[0] == (0,)
    assert conv_output_pattern((0, 1, 2, 3), k=1, s=1, p=0)[0] == (0, 1, 2, 3)


def test_pattern_helpers():
    assert canonical("abac") == (0, 1, 0, 2)
    assert representatives((0, 1, 1, 2, 1)) == (0, 1, 3)
    assert slice_counts((0, 1, 1, 2, 1)) == (1, 3, 1)
    merged, take_a, take_b = merge_patterns((0, 1, 1, 1), (0, 0, 1, 1))
    assert merged == (0, 1, 2, 2) and take_a == (0, 1, 1) and take_b == (0, 0, 1)
    assert merge_patterns((0, 1, 1), (0, 1, 1)) == ((0, 1, 1), None, None)
    with pytest.raises(ValueError, match="lengths differ"):
        merge_patterns((0, 1), (0, 1, 1))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pattern,strides", [
    ((0,) * 8, 2), ((0,) * 8, 1), ((0, 1, 1, 1, 1, 1, 1, 1), 2), ((0, 1, 2, 2, 2, 3), 1), ((0,), (1, 2, 2)),
])
def test_compact_convolution_equals_the_full_one(layout, pattern, strides, rng):
    stored, full = _compact(pattern, rng)
    reference = Convolution(3, 5, strides=strides, strategy="native")
    layer = Convolution(3, 5, strides=strides, data_format=_fmt(layout), lifted_axis_last=layout == "lifted_last",
                        lifted_pattern=pattern)
    xin, y, expected = _compact_matches_full(layer, reference, stored, full, layout)
    # thop's MACs are those of the full convolution
    assert layer.macs(xin.shape, y.shape) == reference.macs(full.shape, expected.shape)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pattern", [(0,) * 4, (0, 1, 1, 1), (0, 1, 2, 2, 2, 3)])
def test_compact_transposed_convolution_equals_the_full_one(layout, pattern, rng):
    stored, full = _compact(pattern, rng)
    reference = Convolution(3, 5, strides=2, transposed=True, strategy="native")
    layer = Convolution(3, 5, strides=2, transposed=True, data_format=_fmt(layout),
                        lifted_axis_last=layout == "lifted_last", lifted_pattern=pattern)
    _compact_matches_full(layer, reference, stored, full, layout)
    assert len(layer.output_pattern) == 2 * len(pattern)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("patterns", [
    ((0, 1, 1, 1, 1, 1, 1, 1), None), ((0, 1, 1, 1), (0, 0, 0, 0)), (None, None), ((0, 1, 1), (0, 1, 0)),
])
def test_skip_convolution_equals_concatenate_then_convolve(layout, transposed, patterns, rng):
    """A list of (compact) inputs read as one concatenated tensor: same output
    as Concatenate + the native Conv3D (gradients: the deep SL-UNet test below,
    whose decoder reads its skips this way)."""
    length = len(next((p for p in patterns if p is not None), (0,) * 4))
    parts = [_compact(p or tuple(range(length)), rng, shape=(2, 6, 6, c)) for p, c in zip(patterns, (3, 2))]
    full = np.concatenate([f for _, f in parts], axis=-1)
    strides = 2 if transposed else 1
    reference = Convolution(3, 4, strides=strides, transposed=transposed, strategy="native")
    reference.build(full.shape)
    layer = ConvNormAct(3, 4, strides=strides, transposed=transposed, data_format=_fmt(layout),
                        lifted_axis_last=layout == "lifted_last", input_patterns=patterns, conv_only=True)
    inputs = [_to_layout(stored, layout) for stored, _ in parts]
    layer.build([x.shape for x in inputs])
    layer.set_weights(reference.get_weights())
    y = ops.convert_to_numpy(layer(inputs))
    assert y.shape == layer.compute_output_shape([x.shape for x in inputs])
    axis = _lifted_axis(layout)
    if layer.output_pattern is not None:
        y = np.take(y, list(layer.output_pattern), axis=axis)
    expected = ops.convert_to_numpy(reference(full))
    np.testing.assert_allclose(y, _to_layout(expected, layout), atol=1e-5)
    clone = ConvNormAct.from_config(layer.get_config())
    assert clone.input_patterns == layer.input_patterns
    assert clone.output_pattern == layer.output_pattern
    # MACs are those of the concatenated full convolution
    assert layer.conv.macs(None, layer.conv.logical_shape(y.shape)) == reference.macs(full.shape, expected.shape)


@pytest.mark.parametrize("layout,transposed,patterns", [
    ("lifted_last", False, [(0, 1, 1, 1, 1, 1, 1, 1)]), ("lifted_first", True, [(0, 1, 2, 2, 2, 3)]),
    ("channels_first", False, [(0, 1, 1, 1), (0, 0, 0, 0)]), ("lifted_last", True, [(0, 1, 1, 1, 1, 1, 1, 1), None]),
    ("channels_first", True, [(0, 1, 2, 2, 2, 3)]),
])
def test_compact_banded_path_has_the_reference_outputs_and_gradients(layout, transposed, patterns, rng):
    """The reference expands compact inputs to all their slices, convolves
    and keeps the output's distinct slices; the banded path never expands."""
    length = len(next(p for p in patterns if p is not None))
    parts = [_to_layout(_compact(p or tuple(range(length)), rng, shape=(2, 5, 4, c))[0], layout)
             for p, c in zip(patterns, (3, 2))]
    common = dict(strides=2 if transposed else (1, 2, 2), transposed=transposed, data_format=_fmt(layout),
                  lifted_axis_last=layout == "lifted_last")
    if len(patterns) == 1:
        layer = Convolution(3, 4, lifted_pattern=patterns[0], **common)
        fn = layer
    else:
        layer = Convolution(3, 4, input_patterns=patterns, **common)

        def fn(*inputs):
            return layer(list(inputs))
    assert_matches_reference("convolution", "compact_banded", fn, parts, lambda: layer.trainable_weights)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_compact_instance_norm_has_the_full_statistics(layout, rng):
    pattern = (0, 1, 1, 1, 2, 1)
    stored, full = _compact(pattern, rng)
    stored = stored * np.array([1.0, 5.0, -2.0], "float32").reshape(1, 3, 1, 1, 1) + 3.0
    full = stored[:, list(pattern)]
    axis = _lifted_axis(layout)
    norm = InstanceNorm(data_format=_fmt(layout), lifted_counts=slice_counts(pattern), lifted_axis=axis)
    y = ops.convert_to_numpy(norm(_to_layout(stored, layout)))
    expected = ops.convert_to_numpy(InstanceNorm(data_format=_fmt(layout))(_to_layout(full, layout)))
    np.testing.assert_allclose(np.take(y, list(pattern), axis=axis), expected, atol=1e-5)
    assert InstanceNorm.from_config(norm.get_config()).lifted_counts == (1, 4, 1)
    with pytest.raises(ValueError, match="both"):
        InstanceNorm(lifted_counts=(1, 2))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("strides,subunits,in_channels", [(2, 2, 3), (1, 2, 4), (1, 1, 3)])
def test_compact_residual_unit_equals_the_full_one(layout, strides, subunits, in_channels, rng):
    """Two sub-units make the paths keep different slices apart (gathers)."""
    pattern = (0, 1, 1, 1, 1, 1, 1, 1)
    stored, full = _compact(pattern, rng, shape=(2, 6, 6, in_channels))
    reference = ResidualUnit(3, 4, strides=strides, subunits=subunits, strategy="native")
    unit = ResidualUnit(3, 4, strides=strides, subunits=subunits, data_format=_fmt(layout),
                        lifted_axis_last=layout == "lifted_last", lifted_pattern=pattern)
    _, y, _ = _compact_matches_full(unit, reference, stored, full, layout)
    assert y.shape[_lifted_axis(layout)] == len(set(unit.output_pattern)) <= len(unit.output_pattern)
    clone = ResidualUnit.from_config(unit.get_config())
    assert clone.lifted_pattern == pattern and clone.output_pattern == unit.output_pattern


def test_compact_layers_refuse_what_would_be_wrong():
    with pytest.raises(ValueError, match="strategy other than 'native'"):
        Convolution(3, 4, lifted_pattern=(0, 0), strategy="native")
    with pytest.raises(ValueError, match="strategy other than 'native'"):
        Convolution(3, 4, input_patterns=[(0, 0), None], strategy="native")
    with pytest.raises(ValueError, match="not both"):
        Convolution(3, 4, lifted_pattern=(0, 0), input_patterns=[(0, 0)])
    with pytest.raises(ValueError, match="one lifted length"):
        Convolution(3, 4, input_patterns=[(0, 0), (0, 0, 0)])
    with pytest.raises(ValueError, match=r"input_patterns\[1\].*\(0, 1\)"):
        Convolution(3, 4, input_patterns=[None, (1, 0)])
    skip = Convolution(3, 4, input_patterns=[(0, 1, 1), None])
    with pytest.raises(ValueError, match="list of that many"):
        skip.build((1, 2, 5, 5, 2))
    with pytest.raises(ValueError, match="should store 2"):
        skip.build([(1, 3, 5, 5, 2), (1, 3, 5, 5, 2)])
    with pytest.raises(ValueError, match="dropout"):
        ConvNormAct(3, 4, dropout=0.2, input_patterns=[(0, 0), None])
    with pytest.raises(ValueError, match=r"\(0, 1, 0\)"):
        Convolution(3, 4, lifted_pattern=(1, 0, 1))
    with pytest.raises(ValueError, match="dropout"):
        ConvNormAct(3, 4, dropout=0.2, lifted_pattern=(0, 0))
    layer = Convolution(3, 4, lifted_pattern=(0, 1, 1))
    with pytest.raises(ValueError, match="LiftedSlices"):
        layer.build((1, 3, 5, 5, 2))  # stores 3 slices, the pattern has 2


def test_lifted_slices_gathers_and_serializes():
    x = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 3, 4)
    layer = LiftedSlices([2, 0, 0], axis=1)
    y = ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(y, x[:, [2, 0, 0]])
    assert y.shape == layer.compute_output_shape(x.shape)
    assert LiftedSlices.from_config(layer.get_config()).indices == (2, 0, 0)
    np.testing.assert_array_equal(ops.convert_to_numpy(LiftedSlices([1], axis=-1)(x)), x[..., 1:2])
    with pytest.raises(ValueError, match="exceed"):
        LiftedSlices([3], axis=1)(x)


# The default layout runs in the default suite; the other two take ~30 s each
# per backend on a 2-core CPU (run them with ``-m slow``).
DEEP_LAYOUTS = [pytest.param(layout, marks=() if layout == "lifted_last" else pytest.mark.slow) for layout in LAYOUTS]


@pytest.mark.parametrize("layout", DEEP_LAYOUTS)
def test_deep_sl_unet_compact_encoder_trains_like_the_reference(layout, rng):
    """m=16, two residual units (gathers), a lifted stride of 1 on the deepest
    level: equal outputs, equal weights after one SGD step with lr=1."""
    def build(strategy, layout):
        keras.utils.set_random_seed(2)
        return SLUNet(levels=6, num_res_units=2, lift_depth=16, input_shape=(32, 32, 3),
                      backbone_layout=layout, conv_strategy=strategy)
    x = rng.random((2, 32, 32, 3)).astype("float32")
    y = (rng.random((2, 32, 32, 1)) > 0.5).astype("float32")
    reference, model = build("native", "lifted_first"), build("auto", layout)
    model.set_weights(reference.get_weights())
    compact = [layer for layer in model._flatten_layers() if getattr(layer, "lifted_pattern", None)]
    assert compact, "the encoder should run compact"
    np.testing.assert_allclose(ops.convert_to_numpy(model(x)), ops.convert_to_numpy(reference(x)), atol=1e-4)
    before = reference.get_weights()
    for net in (reference, model):
        net.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), metrics=[])
        net.train_on_batch(x, y)
    assert max(float(np.abs(a - b).max()) for a, b in zip(reference.get_weights(), before)) > 1e-3
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_sl_unet_backbone_takes_the_compact_lift_only_when_it_runs_compact():
    from keras_sl import UNet

    compact = SLUNet(levels=3, lift_depth=4, num_selected=2, input_shape=(16, 16, 3))
    assert compact.get_layer("lift").compact and compact.backbone.compact_input
    assert compact.backbone.input.shape[compact.get_layer("lift").lifted_axis] == 1
    for kwargs in (dict(conv_strategy="native"), dict(dropout=0.1)):
        model = SLUNet(levels=3, lift_depth=4, num_selected=2, input_shape=(16, 16, 3), **kwargs)
        assert not model.get_layer("lift").compact and not model.backbone.compact_input
    with pytest.raises(ValueError, match="compact_input=True needs"):
        UNet(3, 3, 1, (8, 8), (2,), input_shape=(4, 16, 16, 3), lifted_input=True,
             compact_input=True, conv_strategy="native")


def test_compact_encoder_keeps_the_paper_mac_count():
    compact = SLUNet(levels=5, num_res_units=1, input_shape=(64, 64, 3), conv_strategy="auto")
    reference = SLUNet(levels=5, num_res_units=1, input_shape=(64, 64, 3), conv_strategy="native")
    assert profile(compact, (64, 64, 3))["macs"] == profile(reference, (64, 64, 3))["macs"]
