"""Execution paths of lifted convolutions: every (layout, strategy) gives the
same outputs and the same gradients from the same weights."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from fast_parity import assert_matches_reference
from keras_sl import SLUNet, backend_defaults
from keras_sl.fast import dispatch
from keras_sl.fast.banded_convolution import band
from keras_sl.layers import Convolution, Lift
from keras_sl.layers.convolution import conv_transpose
from lifted_layouts import from_layout as _from_layout
from lifted_layouts import to_layout as _to_layout

CASES = [
    (transposed, strides, layout)
    for transposed, strides, layout in itertools.product(
        [False, True], [1, 2, (1, 2, 2), (2, 1, 1)], ["lifted_first", "lifted_last", "channels_first"]
    )
]


@pytest.mark.parametrize("transposed,strides,layout", CASES)
def test_banded_and_native_agree_with_the_reference(transposed, strides, layout, rng):
    x = rng.standard_normal((2, 8, 12, 10, 3)).astype("float32")
    ref = Convolution(3, 5, strides=strides, transposed=transposed, strategy="native")
    expected = ops.convert_to_numpy(ref(x))
    fmt = "channels_first" if layout == "channels_first" else "channels_last"
    xin = _to_layout(x, layout)
    for strategy in ("native", "banded"):
        layer = Convolution(3, 5, strides=strides, transposed=transposed, data_format=fmt,
                            strategy=strategy, lifted_axis_last=layout == "lifted_last")
        layer.build(xin.shape)
        layer.set_weights(ref.get_weights())  # weights do not depend on the path
        y = ops.convert_to_numpy(layer(xin))
        assert y.shape == tuple(layer.compute_output_shape(xin.shape))
        np.testing.assert_allclose(_from_layout(y, layout), expected, atol=1e-5, err_msg=f"{strategy} {layout}")
        assert layer.resolved_strategy == strategy


@pytest.mark.parametrize("transposed,strides,layout", [
    (False, 2, "lifted_first"), (False, (1, 2, 2), "lifted_last"), (False, 1, "channels_first"),
    (True, 2, "lifted_last"), (True, (2, 1, 1), "lifted_first"), (True, (1, 2, 2), "channels_first"),
])
def test_banded_path_has_the_reference_outputs_and_gradients(transposed, strides, layout, rng):
    fmt = "channels_first" if layout == "channels_first" else "channels_last"
    x = _to_layout(rng.standard_normal((2, 8, 6, 5, 3)).astype("float32"), layout)
    layer = Convolution(3, 5, strides=strides, transposed=transposed, data_format=fmt,
                        lifted_axis_last=layout == "lifted_last")
    assert_matches_reference("convolution", "banded", layer, [x], lambda: layer.trainable_weights)


def test_band_marks_the_taps_of_a_strided_and_a_transposed_convolution():
    conv = band(4, 2, 3, 2, 1, transposed=False)  # output o reads inputs 2o-1, 2o, 2o+1
    assert conv[:, :, 0].tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    assert conv[:, :, 1].tolist() == [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    up = band(2, 4, 3, 2, 1, transposed=True)  # input i writes outputs 2i-1, 2i, 2i+1
    assert up[:, 0, :].tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    assert up.sum() == 5  # the tap past the last output is dropped (PyTorch cropping)


def _auto(rank, lifted_length, in_channels, **kwargs):
    layer = Convolution(rank, 4, **kwargs)
    shape = (1, lifted_length, 8, 8, in_channels)[: rank + 1] + (in_channels,)
    layer.build(shape)
    return layer.resolved_strategy


def test_auto_strategy_per_backend():
    expected = "banded" if dispatch.device() == "cpu" else "native"
    assert _auto(3, 16, 3) == expected
    assert _auto(2, 256, 3) == "native"  # 2-D nets are never folded
    assert _auto(3, None, 3) == "native"  # unknown lifted length
    assert _auto(3, 96, 32) == "native"  # folded channels would explode
    assert _auto(3, 16, 4, groups=2) == "native"  # the band algebra is ungrouped
    assert _auto(3, 16, 3, dilation=2) == "native"


def test_unknown_strategy_and_layout_say_what_is_allowed():
    with pytest.raises(ValueError, match="'auto', 'native', 'banded'"):
        Convolution(3, 8, strategy="fast")
    with pytest.raises(ValueError, match="lifted_last"):
        SLUNet(levels=2, lift_depth=4, num_selected=2, backbone_layout="NDHWC")


def test_lift_axis_last():
    x = np.arange(2 * 4 * 6 * 3, dtype="float32").reshape(2, 4, 6, 3)
    lift = Lift(5, lifted_axis_last=True)
    y = ops.convert_to_numpy(lift(x))
    assert y.shape == (2, 4, 6, 5, 3) == lift.compute_output_shape(x.shape)
    np.testing.assert_array_equal(y[:, :, :, 3], x)
    first = Lift(5, data_format="channels_first", lifted_axis_last=True)
    assert first.compute_output_shape((2, 3, 4, 6)) == (2, 3, 4, 6, 5)
    assert Lift.from_config(lift.get_config()).lifted_axis_last


PATHS = [("lifted_first", "native"), ("lifted_first", "banded"), ("lifted_last", "native"),
         ("lifted_last", "banded"), ("channels_first", "native"), ("channels_first", "banded")]


def _small_sl_unet(layout, strategy, **kwargs):
    keras.utils.set_random_seed(1)
    kwargs.setdefault("input_shape", (16, 16, 3))
    return SLUNet(levels=3, num_res_units=1, lift_depth=4, num_selected=2,
                  backbone_layout=layout, conv_strategy=strategy, **kwargs)


def test_sl_unet_paths_give_the_same_outputs_and_gradients(rng):
    """One SGD step with lr=1 moves each weight by minus its gradient, so equal
    weights after the step mean equal gradients (on every backend)."""
    x = rng.random((2, 16, 16, 3)).astype("float32")
    y = (rng.random((2, 16, 16, 1)) > 0.5).astype("float32")
    reference = _small_sl_unet("lifted_first", "native")
    weights = reference.get_weights()
    outputs, stepped = {}, {}
    for layout, strategy in PATHS:
        model = reference if (layout, strategy) == PATHS[0] else _small_sl_unet(layout, strategy)
        model.set_weights(weights)
        outputs[layout, strategy] = ops.convert_to_numpy(model(x))
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), metrics=[])
        model.train_on_batch(x, y)
        stepped[layout, strategy] = model.get_weights()
    ref_out, ref_step = outputs[PATHS[0]], stepped[PATHS[0]]
    moved = max(float(np.abs(a - b).max()) for a, b in zip(ref_step, weights))
    assert moved > 1e-3  # the step did change the weights
    for path in PATHS[1:]:
        np.testing.assert_allclose(outputs[path], ref_out, atol=1e-4, err_msg=str(path))
        for a, b in zip(stepped[path], ref_step):
            np.testing.assert_allclose(a, b, atol=1e-4, err_msg=str(path))


def test_checkpoints_move_between_layouts(tmp_path, rng):
    x = rng.random((1, 16, 16, 3)).astype("float32")
    source = _small_sl_unet("lifted_first", "native")
    path = str(tmp_path / "model.weights.h5")
    source.save_weights(path)
    target = _small_sl_unet("channels_first", "banded")
    target.load_weights(path)
    np.testing.assert_allclose(ops.convert_to_numpy(target.predict(x, verbose=0)),
                               ops.convert_to_numpy(source.predict(x, verbose=0)), atol=1e-5)


def test_config_keeps_the_requested_path_and_resolves_it_per_backend():
    model = _small_sl_unet("auto", "banded")
    config = model.get_config()
    assert config["backbone_layout"] == "auto" and config["conv_strategy"] == "banded"
    clone = SLUNet.from_config(config)
    assert clone.resolved_backbone_layout == backend_defaults.resolve_backbone_layout("auto")
    convs = [layer for layer in clone._flatten_layers() if isinstance(layer, Convolution)]
    assert convs and all(layer.resolved_strategy == "banded" for layer in convs)
    assert model.resolved_backbone_layout == "lifted_last"


def test_channels_first_images_with_every_layout(rng):
    x = rng.random((1, 16, 16, 3)).astype("float32")
    reference = _small_sl_unet("lifted_first", "native")
    expected = ops.convert_to_numpy(reference(x))
    for layout in ("lifted_first", "lifted_last", "channels_first"):
        model = _small_sl_unet(layout, "auto", data_format="channels_first", input_shape=(3, 16, 16))
        model.set_weights(reference.get_weights())
        y = ops.convert_to_numpy(model(np.moveaxis(x, -1, 1)))
        assert y.shape == (1, 1, 4, 16, 16)
        np.testing.assert_allclose(np.moveaxis(y, 1, -1), expected, atol=1e-5, err_msg=layout)


@pytest.mark.parametrize("layout", ["lifted_first", "lifted_last", "channels_first"])
@pytest.mark.parametrize("strides", [2, (1, 2, 2), 1])
def test_broadcast_input_reads_one_slice_exactly(layout, strides, rng):
    image = rng.standard_normal((2, 12, 10, 3)).astype("float32")
    x = np.repeat(image[:, None], 8, axis=1)  # a lifted image (B, D, H, W, C)
    ref = Convolution(3, 5, strides=strides, strategy="native")
    expected = ops.convert_to_numpy(ref(x))
    fmt = "channels_first" if layout == "channels_first" else "channels_last"
    xin = _to_layout(x, layout)
    layer = Convolution(3, 5, strides=strides, data_format=fmt, lifted_axis_last=layout == "lifted_last",
                        broadcast_input=True, strategy="auto")
    layer.build(xin.shape)
    layer.set_weights(ref.get_weights())
    assert layer.uses_broadcast_input
    np.testing.assert_allclose(_from_layout(ops.convert_to_numpy(layer(xin)), layout), expected, atol=1e-5)
    # "native" keeps the plain Conv3D (the reference path)
    native = Convolution(3, 5, strides=strides, broadcast_input=True, strategy="native")
    native.build(x.shape)
    assert not native.uses_broadcast_input
    with pytest.raises(ValueError, match="non-transposed"):
        Convolution(3, 5, transposed=True, broadcast_input=True)


@pytest.mark.parametrize("layout,strides", [("lifted_first", 2), ("lifted_last", 2), ("channels_first", 1)])
def test_broadcast_slice_path_has_the_reference_gradients(layout, strides, rng):
    """Through the lift: the one-slice path is the same function of the image."""
    axis = {"lifted_first": 1, "lifted_last": 3, "channels_first": 2}[layout]
    fmt = "channels_first" if layout == "channels_first" else "channels_last"
    image = rng.standard_normal((2, 12, 10, 3)).astype("float32")
    if fmt == "channels_first":
        image = np.moveaxis(image, -1, 1)
    layer = Convolution(3, 5, strides=strides, data_format=fmt, lifted_axis_last=layout == "lifted_last",
                        broadcast_input=True)

    def lifted_conv(img):
        return layer(ops.repeat(ops.expand_dims(img, axis), 8, axis=axis))

    assert_matches_reference("convolution", "broadcast_slice", lifted_conv, [image], lambda: layer.trainable_weights)


def test_sl_unet_encoder_runs_on_distinct_slices_only():
    model = _small_sl_unet("auto", "auto")
    compact = {layer.path: layer.lifted_pattern for layer in model._flatten_layers()
               if isinstance(layer, Convolution) and layer.lifted_pattern is not None}
    assert compact["down0/unit0/conv"] == compact["down0/residual"] == (0, 0, 0, 0)  # one slice read
    assert set(p.split("/")[0] for p in compact) == {"down0", "down1", "bottom"}  # the encoder only
    reference = _small_sl_unet("lifted_first", "native")
    assert not any(layer.lifted_pattern or layer.uses_broadcast_input for layer in reference._flatten_layers()
                   if isinstance(layer, Convolution))
    # Dropout makes equal slices differ: only the first layer reads one slice.
    dropped = _small_sl_unet("auto", "auto", dropout=0.1)
    used = sorted(layer.path for layer in dropped._flatten_layers()
                  if isinstance(layer, Convolution) and layer.uses_broadcast_input)
    assert used == ["down0/residual", "down0/unit0/conv"]
    assert not any(layer.lifted_pattern for layer in dropped._flatten_layers() if isinstance(layer, Convolution))


@pytest.mark.parametrize("rank,kernel_size,strides,data_format", [
    (2, 3, 2, "channels_last"), (2, 3, 2, "channels_first"), (3, 3, (1, 2, 2), "channels_last"),
    (3, 3, 2, "channels_first"), (1, 5, 3, "channels_last"), (2, 1, 2, "channels_last"), (2, 3, 1, "channels_last"),
    (2, 4, 2, "channels_last"), (2, 2, 2, "channels_last"), (1, 4, 3, "channels_first"),
])
def test_transposed_convolution_by_phases_is_exact(rank, kernel_size, strides, data_format, rng):
    """Outputs and gradients (input and kernel) of the phase decomposition
    equal the input-dilated transposed convolution's, odd and even kernels."""
    ks = (kernel_size,) * rank
    st = (strides,) * rank if isinstance(strides, int) else strides
    x = rng.standard_normal((2, *(5, 6, 4)[:rank], 3)).astype("float32")
    if data_format == "channels_first":
        x = np.moveaxis(x, -1, 1)
    w = rng.standard_normal((*ks, 4, 3)).astype("float32")

    def up(x, w):
        return conv_transpose(x, w, st, (1,) * rank, 1, data_format)

    assert_matches_reference("conv_transpose", "phases", up, [x, w], atol=1e-4)


def test_transposed_by_phases_pads_inside_the_convolution(monkeypatch, rng):
    """3x3 stride-2 (every SL/UNet up convolution): "same" padding in the op,
    no pre-padded input (XLA's CPU convolution is ~4x slower on the latter)."""
    from keras_sl.fast import transposed_by_phases

    def no_pad(*args, **kwargs):
        raise AssertionError("the input was padded outside the convolution")

    monkeypatch.setattr(transposed_by_phases.ops, "pad", no_pad)
    x = rng.standard_normal((1, 6, 6, 3)).astype("float32")
    w = rng.standard_normal((3, 3, 4, 3)).astype("float32")
    assert tuple(transposed_by_phases.phases(x, w, (2, 2), (1, 1), 1, "channels_last").shape) == (1, 12, 12, 4)


DEFERRED_CASES = [
    (3, "native", False), (3, "banded", False), (3, "banded", True), (3, "native", True), (2, "native", False),
]


@pytest.mark.parametrize("rank,strategy,lifted_last", DEFERRED_CASES)
def test_norm_before_the_pixel_shuffle_gives_the_same_block(rank, strategy, lifted_last, rng):
    """Up-sampling ConvNormAct with the transposed conv as phases: norm and
    PReLU on the phase layout, then the shuffle (``call_deferred``): the
    block's outputs and gradients are the reference's."""
    from keras_sl.blocks import ConvNormAct

    x = rng.standard_normal((2, 4, 6, 5, 3)[: rank + 1] + (3,)).astype("float32")
    block = ConvNormAct(rank, 4, strides=2, transposed=True, strategy=strategy, lifted_axis_last=lifted_last)
    assert_matches_reference("convolution_deferred", "shuffle_after_norm", block, [x],
                             lambda: block.trainable_weights, atol=1e-4)
    assert tuple(block.compute_output_shape(x.shape)) == (2, *[d * 2 for d in x.shape[1:-1]], 4)


def test_call_deferred_defers_only_a_phase_decomposed_transposed_convolution(rng):
    x = ops.convert_to_tensor(rng.standard_normal((1, 6, 6, 3)).astype("float32"))
    with dispatch.forced("convolution_deferred", "shuffle_after_norm"):
        assert Convolution(2, 4, strides=2).call_deferred(x)[1] is None  # not transposed
        xt = ops.convert_to_tensor(np.moveaxis(ops.convert_to_numpy(x), -1, 1))
        assert Convolution(2, 4, strides=2, transposed=True, data_format="channels_first").call_deferred(xt)[1] \
            is None
        values, finish = Convolution(2, 4, strides=2, transposed=True).call_deferred(x)
        assert tuple(values.shape) == (1, 6, 6, 4, 4) and tuple(finish(values).shape) == (1, 12, 12, 4)
    with dispatch.forced("convolution_deferred", dispatch.REFERENCE):
        assert Convolution(2, 4, strides=2, transposed=True).call_deferred(x)[1] is None
