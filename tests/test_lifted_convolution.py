"""Execution paths of lifted convolutions: every (layout, strategy) gives the
same outputs and the same gradients from the same weights."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from keras_sl import SLUNet, backend_defaults
from keras_sl.layers import Convolution, Lift
from keras_sl.layers.convolution import _band, _on_cpu, resolve_strategy
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


def test_band_marks_the_taps_of_a_strided_and_a_transposed_convolution():
    conv = _band(4, 2, 3, 2, 1, transposed=False)  # output o reads inputs 2o-1, 2o, 2o+1
    assert conv[:, :, 0].tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    assert conv[:, :, 1].tolist() == [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    up = _band(2, 4, 3, 2, 1, transposed=True)  # input i writes outputs 2i-1, 2i, 2i+1
    assert up[:, 0, :].tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    assert up.sum() == 5  # the tap past the last output is dropped (PyTorch cropping)


def test_auto_strategy_per_backend():
    expected = "banded" if _on_cpu() else "native"
    assert resolve_strategy(3, 16, 3) == expected
    assert resolve_strategy(2, 256, 3) == "native"  # 2-D nets are never folded
    assert resolve_strategy(3, None, 3) == "native"  # unknown lifted length
    assert resolve_strategy(3, 96, 32) == "native"  # folded channels would explode




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
    from keras_sl.layers import convolution as conv_module

    ks = (kernel_size,) * rank
    st = (strides,) * rank if isinstance(strides, int) else strides
    x = rng.standard_normal((2, *(5, 6, 4)[:rank], 3)).astype("float32")
    if data_format == "channels_first":
        x = np.moveaxis(x, -1, 1)
    w = rng.standard_normal((*ks, 4, 3)).astype("float32")
    dilated = conv_module._crop_transposed(
        conv_module._native_layout(
            lambda t, fmt: ops.conv_transpose(t, w, strides=st, padding="valid", data_format=fmt), x, data_format
        ),
        ks, st, data_format,
    )
    phases = conv_module._transposed_by_phases(x, w, ks, st, data_format)
    np.testing.assert_allclose(ops.convert_to_numpy(phases), ops.convert_to_numpy(dilated), atol=1e-4)


def test_transposed_by_phases_pads_inside_the_convolution(monkeypatch, rng):
    """3x3 stride-2 (every SL/UNet up convolution): "same" padding in the op,
    no pre-padded input (XLA's CPU convolution is ~4x slower on the latter)."""
    from keras_sl.layers import convolution as conv_module

    def no_pad(*args, **kwargs):
        raise AssertionError("the input was padded outside the convolution")

    monkeypatch.setattr(conv_module.ops, "pad", no_pad)
    x = rng.standard_normal((1, 6, 6, 3)).astype("float32")
    w = rng.standard_normal((3, 3, 4, 3)).astype("float32")
    assert tuple(conv_module._transposed_by_phases(x, w, (3, 3), (2, 2), "channels_last").shape) == (1, 12, 12, 4)


def test_transposed_by_phases_has_the_same_gradients(monkeypatch, rng):
    """Train one SGD step through a transposed convolution with each method."""
    from keras_sl.layers import convolution as conv_module

    x = rng.standard_normal((2, 6, 5, 3)).astype("float32")
    y = rng.standard_normal((2, 12, 10, 4)).astype("float32")
    results = []
    for use_phases in (False, True):
        monkeypatch.setattr(conv_module, "_transposed_by_phases_pays", lambda value=use_phases: value)
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((6, 5, 3)), Convolution(2, 4, strides=2, transposed=True)])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse", jit_compile=False)
        model.train_on_batch(x, y)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-5)


DEFERRED_CASES = [
    (3, "native", False), (3, "banded", False), (3, "banded", True), (3, "native", True), (2, "native", False),
]


@pytest.mark.parametrize("rank,strategy,lifted_last", DEFERRED_CASES)
def test_norm_before_the_pixel_shuffle_gives_the_same_block(monkeypatch, rank, strategy, lifted_last, rng):
    """Up-sampling ConvNormAct with the transposed conv as phases: norm and
    PReLU on the phase layout, then the shuffle (``call_deferred``), equal in
    outputs and after one training step to norm after the shuffle."""
    from keras_sl.blocks import ConvNormAct
    from keras_sl.layers import convolution as conv_module

    monkeypatch.setattr(conv_module, "_transposed_by_phases_pays", lambda: True)
    shape = (2, 4, 6, 5, 3)[: rank + 1] + (3,)
    x = rng.standard_normal(shape).astype("float32")
    block_shape = tuple(d * 2 for d in shape[1:-1])
    y = rng.standard_normal((2, *block_shape, 4)).astype("float32")
    results = []
    for deferred in (True, False):
        monkeypatch.setattr(conv_module, "shuffle_is_deferred", lambda *args, value=deferred: value)
        keras.utils.set_random_seed(5)
        block = ConvNormAct(rank, 4, strides=2, transposed=True, strategy=strategy, lifted_axis_last=lifted_last)
        model = keras.Sequential([keras.Input(shape[1:]), block])
        values, finish = block.conv.call_deferred(ops.convert_to_tensor(x))
        assert (finish is not None) == deferred
        before = ops.convert_to_numpy(model(x))
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse", jit_compile=False)
        model.train_on_batch(x, y)
        results.append((before, model.get_weights()))
    (a, wa), (b, wb) = results
    assert a.shape == (2, *block_shape, 4)
    np.testing.assert_allclose(a, b, atol=1e-4)
    for u, v in zip(wa, wb):
        np.testing.assert_allclose(u, v, atol=1e-5)


def test_call_deferred_defers_only_a_phase_decomposed_transposed_convolution(monkeypatch, rng):
    from keras_sl.layers import convolution as conv_module

    x = ops.convert_to_tensor(rng.standard_normal((1, 6, 6, 3)).astype("float32"))
    monkeypatch.setattr(conv_module, "_transposed_by_phases_pays", lambda: True)
    assert Convolution(2, 4, strides=2).call_deferred(x)[1] is None  # not transposed
    xt = ops.convert_to_tensor(np.moveaxis(ops.convert_to_numpy(x), -1, 1))
    assert Convolution(2, 4, strides=2, transposed=True, data_format="channels_first").call_deferred(xt)[1] is None
    values, finish = Convolution(2, 4, strides=2, transposed=True).call_deferred(x)
    assert tuple(values.shape) == (1, 6, 6, 4, 4) and tuple(finish(values).shape) == (1, 12, 12, 4)
    monkeypatch.setattr(conv_module, "_transposed_by_phases_pays", lambda: False)
    assert Convolution(2, 4, strides=2, transposed=True).call_deferred(x)[1] is None
