"""Layers and blocks: Lift, Convolution, InstanceNorm, SliceHead, ConvNormAct, ResidualUnit."""

import contextlib
import itertools

import keras
import numpy as np
import pytest
from keras import ops

from keras_sl.blocks import ConvNormAct, ResidualUnit
from keras_sl.layers import Convolution, InstanceNorm, Lift, SliceHead
from keras_sl.layers.slice_head import default_selection


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------
def ref_conv(x, kernel, bias, strides):
    """PyTorch ConvNd(padding=(k-1)//2) on channels_last x, Keras kernel (*k, in, out)."""
    rank = x.ndim - 2
    ks = kernel.shape[:rank]
    cin, cout = kernel.shape[rank], kernel.shape[rank + 1]
    pads = [(k - 1) // 2 for k in ks]
    xp = np.pad(x, [(0, 0)] + [(p, p) for p in pads] + [(0, 0)])
    out_sp = [(x.shape[1 + i] + 2 * pads[i] - ks[i]) // strides[i] + 1 for i in range(rank)]
    y = np.zeros((x.shape[0], *out_sp, cout), dtype="float64")
    for b in range(x.shape[0]):
        for pos in itertools.product(*[range(n) for n in out_sp]):
            for o in range(cout):
                acc = 0.0
                for kidx in itertools.product(*[range(k) for k in ks]):
                    src = tuple(pos[i] * strides[i] + kidx[i] for i in range(rank))
                    for c in range(cin):
                        acc += xp[(b, *src, c)] * kernel[(*kidx, c, o)]
                y[(b, *pos, o)] = acc + (0.0 if bias is None else bias[o])
    return y


def ref_conv_transpose(x, kernel, bias, strides):
    """PyTorch ConvTransposeNd(padding=(k-1)//2, output_padding=s-1), Keras kernel (*k, out, in)."""
    rank = x.ndim - 2
    ks = kernel.shape[:rank]
    cout, cin = kernel.shape[rank], kernel.shape[rank + 1]
    pads = [(k - 1) // 2 for k in ks]
    in_sp = x.shape[1 : 1 + rank]
    out_sp = [(in_sp[i] - 1) * strides[i] + ks[i] - 2 * pads[i] + strides[i] - 1 for i in range(rank)]
    full_sp = [max((in_sp[i] - 1) * strides[i] + ks[i], pads[i] + out_sp[i]) for i in range(rank)]
    full = np.zeros((x.shape[0], *full_sp, cout), dtype="float64")
    for b in range(x.shape[0]):
        for pos in itertools.product(*[range(n) for n in in_sp]):
            for kidx in itertools.product(*[range(k) for k in ks]):
                dst = tuple(pos[i] * strides[i] + kidx[i] for i in range(rank))
                for o in range(cout):
                    for c in range(cin):
                        full[(b, *dst, o)] += x[(b, *pos, c)] * kernel[(*kidx, o, c)]
    crop = tuple(slice(pads[i], pads[i] + out_sp[i]) for i in range(rank))
    y = full[(slice(None), *crop, slice(None))]
    if bias is not None:
        y = y + bias
    return y


def ref_instance_norm(x, axes, eps=1e-5):
    x = x.astype("float64")
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)  # biased
    return (x - mean) / np.sqrt(var + eps)


def prelu(x, alpha=0.25):
    return np.where(x > 0, x, alpha * x)


def randomize(layer, rng):
    """Give every weight random values (the bias initialiser is zeros)."""
    for w in layer.weights:
        w.assign(rng.normal(size=tuple(w.shape)).astype("float32"))


# ---------------------------------------------------------------------------
# Lift
# ---------------------------------------------------------------------------
def test_lift_shape_and_values(rng):
    x = rng.normal(size=(2, 5, 6, 3)).astype("float32")
    y = np_(Lift(depth=4)(x))
    assert y.shape == (2, 4, 5, 6, 3)
    for z in range(4):
        np.testing.assert_array_equal(y[:, z], x)


def test_lift_channels_first(rng):
    x = rng.normal(size=(2, 3, 5, 6)).astype("float32")
    layer = Lift(depth=3, data_format="channels_first")
    assert layer.lifted_axis == 2
    y = np_(layer(x))
    assert y.shape == (2, 3, 3, 5, 6)
    for z in range(3):
        np.testing.assert_array_equal(y[:, :, z], x)


def test_lift_1d_input(rng):
    x = rng.normal(size=(1, 7, 2)).astype("float32")
    y = np_(Lift(depth=5)(x))
    assert y.shape == (1, 5, 7, 2)
    np.testing.assert_array_equal(y, np.repeat(x[:, None], 5, axis=1))


def test_lift_compute_output_shape():
    assert Lift(depth=16).compute_output_shape((None, 64, 48, 3)) == (None, 16, 64, 48, 3)
    assert Lift(depth=8, data_format="channels_first").compute_output_shape((None, 3, 64, 48)) == (
        None, 3, 8, 64, 48,
    )
    # Symbolic call agrees with compute_output_shape.
    out = Lift(depth=4)(keras.Input((None, 10, 3)))
    assert tuple(out.shape) == (None, 4, None, 10, 3)


def test_lift_get_config_round_trip(rng):
    layer = Lift(depth=7, data_format="channels_first", name="my_lift")
    config = layer.get_config()
    assert config["depth"] == 7 and config["data_format"] == "channels_first"
    clone = Lift.from_config(config)
    assert (clone.depth, clone.data_format, clone.name) == (7, "channels_first", "my_lift")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, Lift)
    assert restored.get_config() == config
    x = rng.normal(size=(1, 2, 4, 4)).astype("float32")
    np.testing.assert_array_equal(np_(restored(x)), np_(layer(x)))


@pytest.mark.parametrize("lifted_axis_last", [False, True])
def test_lift_compact_stores_the_one_distinct_slice(lifted_axis_last, rng):
    x = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    full = Lift(depth=8, lifted_axis_last=lifted_axis_last)
    compact = Lift(depth=8, lifted_axis_last=lifted_axis_last, compact=True)
    y = np_(compact(x))
    assert y.shape == compact.compute_output_shape(x.shape)
    axis = 3 if lifted_axis_last else 1
    assert y.shape[axis] == 1
    np.testing.assert_array_equal(np.repeat(y, 8, axis=axis), np_(full(x)))
    assert Lift.from_config(compact.get_config()).compact


def test_lift_rejects_bad_depth():
    with pytest.raises(ValueError, match="depth"):
        Lift(depth=0)


# ---------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rank, spatial, strides, transposed, expected",
    [
        (2, (8, 8), 1, False, (8, 8)),
        (2, (8, 8), 2, False, (4, 4)),
        (2, (8, 8), 1, True, (8, 8)),
        (2, (8, 8), 2, True, (16, 16)),
        (2, (8, 6), (2, 1), False, (4, 6)),
        (1, (10,), 2, False, (5,)),
        (1, (5,), 2, True, (10,)),
        (3, (4, 8, 8), (1, 2, 2), False, (4, 4, 4)),
        (3, (4, 8, 8), (1, 2, 2), True, (4, 16, 16)),
        (3, (4, 4, 4), 2, False, (2, 2, 2)),
        (3, (2, 4, 4), 2, True, (4, 8, 8)),
    ],
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_convolution_output_shapes(rank, spatial, strides, transposed, expected, data_format):
    cin, cout = 3, 5
    if data_format == "channels_last":
        shape, want = (2, *spatial, cin), (2, *expected, cout)
    else:
        shape, want = (2, cin, *spatial), (2, cout, *expected)
    layer = Convolution(rank, cout, kernel_size=3, strides=strides, transposed=transposed, data_format=data_format)
    y = layer(np.zeros(shape, "float32"))
    assert tuple(y.shape) == want
    assert layer.compute_output_shape(shape) == want
    k = (3,) * rank
    assert tuple(layer.kernel.shape) == ((*k, cout, cin) if transposed else (*k, cin, cout))


def test_convolution_compute_output_shape_keeps_none():
    layer = Convolution(2, 4, strides=2)
    assert layer.compute_output_shape((None, None, 16, 3)) == (None, None, 8, 4)


@pytest.mark.parametrize(
    "rank, spatial, kernel_size, strides, transposed",
    [
        (1, (7,), 3, 1, False),
        (1, (7,), 3, 2, False),
        (1, (8,), 5, 2, False),
        (1, (6,), 5, 3, False),
        (1, (4,), 3, 1, True),
        (1, (4,), 3, 2, True),
        (1, (4,), 5, 2, True),
        (1, (4,), 1, 2, True),
        (2, (5, 6), 3, 1, False),
        (2, (5, 6), 3, 2, False),
        (2, (5, 6), (3, 5), (2, 1), False),
        (2, (3, 4), 3, 2, True),
        (2, (3, 4), (3, 1), (2, 2), True),
    ],
)
def test_convolution_matches_numpy_reference(rank, spatial, kernel_size, strides, transposed, rng):
    cin, cout = 2, 3
    x = rng.normal(size=(2, *spatial, cin)).astype("float32")
    layer = Convolution(rank, cout, kernel_size=kernel_size, strides=strides, transposed=transposed)
    layer.build(x.shape)
    randomize(layer, rng)
    kernel, bias = np_(layer.kernel).astype("float64"), np_(layer.bias).astype("float64")
    s = (strides,) * rank if isinstance(strides, int) else strides
    ref = (ref_conv_transpose if transposed else ref_conv)(x.astype("float64"), kernel, bias, s)
    y = np_(layer(x))
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)

    # channels_first with the same weights gives the transposed result.
    cf = Convolution(
        rank, cout, kernel_size=kernel_size, strides=strides, transposed=transposed, data_format="channels_first"
    )
    cf.build(np.moveaxis(x, -1, 1).shape)
    cf.set_weights(layer.get_weights())
    y_cf = np_(cf(np.moveaxis(x, -1, 1)))
    np.testing.assert_allclose(np.moveaxis(y_cf, 1, -1), ref, rtol=1e-5, atol=1e-5)


def test_convolution_transposed_stride_larger_than_padding(rng):
    x = rng.normal(size=(1, 4, 2)).astype("float32")
    layer = Convolution(1, 2, kernel_size=3, strides=3, transposed=True)
    layer.build(x.shape)
    randomize(layer, rng)
    ref = ref_conv_transpose(x.astype("float64"), np_(layer.kernel), np_(layer.bias), (3,))
    assert layer.compute_output_shape(x.shape) == ref.shape == (1, 12, 2)
    y = np_(layer(x))
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_convolution_no_bias(rng):
    x = rng.normal(size=(1, 6, 6, 2)).astype("float32")
    layer = Convolution(2, 3, use_bias=False, strides=2)
    layer.build(x.shape)
    randomize(layer, rng)
    assert layer.bias is None and len(layer.weights) == 1
    ref = ref_conv(x.astype("float64"), np_(layer.kernel), None, (2, 2))
    np.testing.assert_allclose(np_(layer(x)), ref, rtol=1e-5, atol=1e-5)


def test_convolution_validation():
    with pytest.raises(ValueError, match="odd"):
        Convolution(2, 4, kernel_size=2)
    with pytest.raises(ValueError, match="rank"):
        Convolution(4, 4)
    with pytest.raises(ValueError, match="strides"):
        Convolution(3, 4, strides=(1, 2))


def test_convolution_get_config_round_trip(rng):
    layer = Convolution(
        2, 4, kernel_size=(3, 5), strides=(1, 2), transposed=True, use_bias=False,
        data_format="channels_first", name="up",
    )
    config = layer.get_config()
    for key, value in dict(
        rank=2, filters=4, kernel_size=(3, 5), strides=(1, 2), transposed=True, use_bias=False,
        data_format="channels_first",
    ).items():
        assert tuple(config[key]) == value if isinstance(value, tuple) else config[key] == value
    clone = Convolution.from_config(config)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, Convolution)
    for other in (clone, restored):
        assert (other.rank, other.filters, other.kernel_size, other.strides, other.transposed, other.use_bias,
                other.data_format, other.name) == (2, 4, (3, 5), (1, 2), True, False, "channels_first", "up")
        assert other.get_config() == config
    # The restored layer computes the same function once it has the same weights.
    x = rng.normal(size=(1, 3, 4, 4)).astype("float32")
    y = np_(layer(x))
    restored.build(x.shape)
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(np_(restored(x)), y, rtol=1e-6, atol=1e-6)
    assert y.shape == (1, 4, 4, 8)


def test_convolution_torch_default_init_range():
    layer = Convolution(2, 16, kernel_size=3)
    layer.build((1, 8, 8, 8))
    k = np_(layer.kernel)
    bound = 1.0 / np.sqrt(8 * 9)  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.abs(k).max() <= bound + 1e-7
    assert np.abs(k).max() > 0.8 * bound


# ---------------------------------------------------------------------------
# InstanceNorm
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, data_format, axes",
    [
        ((2, 5, 6, 3), "channels_last", (1, 2)),
        ((2, 3, 5, 6), "channels_first", (2, 3)),
        ((2, 3, 4, 5, 2), "channels_last", (1, 2, 3)),
        ((2, 4, 7), "channels_last", (1,)),
    ],
)
def test_instance_norm_matches_numpy(shape, data_format, axes, rng):
    x = (rng.normal(size=shape) * 3.0 + 1.5).astype("float32")
    y = np_(InstanceNorm(data_format=data_format)(x))
    np.testing.assert_allclose(y, ref_instance_norm(x, axes), rtol=1e-4, atol=1e-4)


def test_instance_norm_epsilon_and_biased_variance(rng):
    # Variance ~1e-5: eps=1e-5 and the biased estimator both change the result visibly.
    x = (rng.normal(size=(1, 4, 4, 2)) * 3e-3).astype("float32")
    y = np_(InstanceNorm()(x))
    ref = ref_instance_norm(x, (1, 2), eps=1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-4)
    assert not np.allclose(y, ref_instance_norm(x, (1, 2), eps=1e-3), rtol=1e-2)
    xd = x.astype("float64")
    mean = xd.mean(axis=(1, 2), keepdims=True)
    unbiased = (xd - mean) / np.sqrt(xd.var(axis=(1, 2), ddof=1, keepdims=True) + 1e-5)
    assert not np.allclose(y, unbiased, rtol=1e-2)
    # A constant channel normalises to 0 (no division by zero).
    const = np.full((1, 4, 4, 1), 3.0, "float32")
    np.testing.assert_allclose(np_(InstanceNorm()(const)), 0.0, atol=1e-6)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("training", [False, True])
def test_instance_norm_absorbs_a_channel_shift(data_format, training, rng):
    """A conv bias handed over as ``shift`` (never added to the tensor) gives
    the output of normalising ``x + shift``."""
    x = rng.normal(size=(2, 5, 6, 4, 3)).astype("float32")
    shift = np.array([2.0, -7.0, 0.5], "float32")
    if data_format == "channels_first":
        x = np.moveaxis(x, -1, 1)
    shifted = x + (shift if data_format == "channels_last" else shift.reshape(1, 3, 1, 1, 1))
    norm = InstanceNorm(data_format=data_format)
    np.testing.assert_allclose(np_(norm(x, shift=shift, training=training)), np_(norm(shifted)), atol=1e-4)


def test_instance_norm_large_mean_small_spread(rng):
    """Mean 50x the standard deviation: the single-pass statistics
    (``E[x^2] - E[x]^2``: ours on JAX, Keras' ``moments`` on torch) lose about
    3 digits of the variance; outputs stay within 3e-3 of float64."""
    x = (rng.normal(size=(2, 16, 16, 8, 4)) + 50.0).astype("float32")
    np.testing.assert_allclose(np_(InstanceNorm()(x)), ref_instance_norm(x, (1, 2, 3)), atol=3e-3)


def test_conv_norm_act_leaves_the_bias_to_the_norm(rng):
    """Instance norm cancels the conv bias, so the block never adds it; the
    bias still gets a (zero) gradient, so optimizers neither warn nor move it."""
    import warnings

    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    block = ConvNormAct(2, 4, name="block")
    model = keras.Model(inputs, block(inputs))
    kernel, bias, alpha = model.get_weights()
    model.set_weights([kernel, np.array([1.0, -2.0, 3.0, 0.5], "float32"), alpha])
    conv = np_(block.conv(x)).astype("float64")  # the full convolution, bias included
    np.testing.assert_allclose(np_(model(x)), prelu(ref_instance_norm(conv, (1, 2)), 0.25), atol=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train_on_batch(x, rng.normal(size=(2, 8, 8, 4)).astype("float32"))
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
    new_kernel, new_bias, _ = model.get_weights()
    assert np.abs(new_kernel - kernel).max() > 1e-3
    np.testing.assert_allclose(new_bias, [1.0, -2.0, 3.0, 0.5], atol=1e-5)


def test_instance_norm_config():
    layer = InstanceNorm(epsilon=1e-3, data_format="channels_first")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, InstanceNorm)
    assert (clone.epsilon, clone.data_format) == (1e-3, "channels_first")
    assert layer.weights == []  # no affine parameters


# ---------------------------------------------------------------------------
# SliceHead
# ---------------------------------------------------------------------------
def test_default_selection_is_central():
    assert default_selection(16, 5) == [5, 6, 7, 8, 9]
    assert default_selection(4, 2) == [1, 2]
    assert default_selection(6, 3) == [1, 2, 3]
    assert SliceHead(depth=16, num_selected=5).get_selected() == [5, 6, 7, 8, 9]
    assert SliceHead(depth=8, num_selected=1).get_selected() == [3]


def test_slice_head_sum_sigmoid(rng):
    logits = rng.normal(size=(2, 6, 4, 5, 1)).astype("float32")
    head = SliceHead(depth=6, num_selected=3, selected_slices=[5, 0, 2])
    assert head.get_selected() == [0, 2, 5]
    y = np_(head(logits))
    assert y.shape == (2, 4, 5, 1)
    ref = sigmoid(logits[:, [0, 2, 5]].astype("float64").sum(axis=1))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    # Changing the selection changes the output (the variable is read at call time).
    head.set_selected([1, 3, 4])
    ref2 = sigmoid(logits[:, [1, 3, 4]].astype("float64").sum(axis=1))
    np.testing.assert_allclose(np_(head(logits)), ref2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ref, ref2)


def test_slice_head_channels_first(rng):
    logits = rng.normal(size=(2, 1, 6, 4, 5)).astype("float32")  # (B, K, m, H, W)
    head = SliceHead(depth=6, num_selected=2, selected_slices=[1, 4], data_format="channels_first")
    y = np_(head(logits))
    assert y.shape == (2, 1, 4, 5)
    ref = sigmoid(logits[:, :, [1, 4]].astype("float64").sum(axis=2))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    assert head.compute_output_shape((None, 1, 6, 4, 5)) == (None, 1, 4, 5)


def test_slice_head_softmax_and_mean(rng):
    logits = rng.normal(size=(1, 5, 3, 3, 4)).astype("float32")
    head = SliceHead(depth=5, num_selected=2, activation="softmax", selected_slices=[0, 3])
    summed = logits[:, [0, 3]].astype("float64").sum(axis=1)
    ref = np.exp(summed) / np.exp(summed).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(np_(head(logits)), ref, rtol=1e-5, atol=1e-6)

    reg = SliceHead(depth=5, num_selected=3, activation=None, reduction="mean", selected_slices=[1, 2, 4])
    np.testing.assert_allclose(np_(reg(logits)), logits[:, [1, 2, 4]].mean(axis=1), rtol=1e-5, atol=1e-6)


def test_slice_head_set_selected_validation():
    head = SliceHead(depth=6, num_selected=3)
    with pytest.raises(ValueError, match="Expected 3 selected slices"):
        head.set_selected([0, 1])
    with pytest.raises(ValueError, match="Expected 3 selected slices"):
        head.set_selected([0, 1, 2, 3])
    with pytest.raises(ValueError, match="distinct"):
        head.set_selected([1, 1, 2])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        head.set_selected([0, 1, 6])
    with pytest.raises(ValueError, match="distinct"):
        head.set_selected([-1, 0, 1])
    # Failed calls left the default selection untouched.
    assert head.get_selected() == [1, 2, 3]
    with pytest.raises(ValueError, match="num_selected"):
        SliceHead(depth=4, num_selected=5)
    with pytest.raises(ValueError, match="reduction"):
        SliceHead(depth=4, num_selected=2, reduction="max")


def test_slice_head_set_selected_bad_losses_is_atomic():
    head = SliceHead(depth=6, num_selected=3)
    with pytest.raises(ValueError, match="6 entries"):
        head.set_selected([0, 4, 5], slice_losses=[0.1] * 5)
    assert head.get_selected() == [1, 2, 3]


def test_slice_head_has_selection():
    head = SliceHead(depth=4, num_selected=2)
    assert not head.has_selection
    assert np.isnan(head.get_slice_losses()).all() and head.get_slice_losses().shape == (4,)
    head.set_selected([0, 3])
    assert head.get_selected() == [0, 3]
    assert not head.has_selection  # indices alone are not a measured selection
    losses = np.array([0.1, 0.5, 0.4, 0.2], "float32")
    head.set_selected([3, 0], slice_losses=losses)
    assert head.has_selection
    assert head.get_selected() == [0, 3]
    np.testing.assert_allclose(head.get_slice_losses(), losses)
    assert head.get_config()["selected_slices"] == [0, 3]


def test_slice_head_return_quality(rng):
    logits = rng.normal(size=(3, 4, 6, 6, 1)).astype("float32")
    head = SliceHead(depth=4, num_selected=2, selected_slices=[0, 1])
    pred, q = head(logits, return_quality=True)
    np.testing.assert_allclose(np_(pred), sigmoid(logits[:, :2].sum(axis=1)), rtol=1e-5, atol=1e-6)
    from keras_sl.pqa import quality

    np.testing.assert_allclose(np_(q), np_(quality(logits, [0, 1])), rtol=1e-6)
    assert np_(q).shape == (3,)


def test_slice_head_config_round_trip():
    head = SliceHead(depth=8, num_selected=3, activation=None, reduction="mean", selected_slices=[7, 1, 4],
                     data_format="channels_first")
    clone = keras.layers.deserialize(keras.layers.serialize(head))
    assert isinstance(clone, SliceHead)
    assert clone.get_selected() == [1, 4, 7]
    assert (clone.depth, clone.num_selected, clone.activation, clone.reduction, clone.data_format) == (
        8, 3, None, "mean", "channels_first",
    )


# ---------------------------------------------------------------------------
# ConvNormAct and ResidualUnit
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rank, shape, strides, transposed, expected",
    [
        (2, (1, 8, 8, 3), 1, False, (1, 8, 8, 4)),
        (2, (1, 8, 8, 3), 2, False, (1, 4, 4, 4)),
        (2, (1, 8, 8, 3), 2, True, (1, 16, 16, 4)),
        (3, (1, 2, 4, 4, 3), (1, 2, 2), False, (1, 2, 2, 2, 4)),
        (3, (1, 2, 4, 4, 3), (1, 2, 2), True, (1, 2, 8, 8, 4)),
    ],
)
def test_conv_norm_act_shapes(rank, shape, strides, transposed, expected):
    block = ConvNormAct(rank, 4, strides=strides, transposed=transposed)
    assert tuple(block(np.zeros(shape, "float32")).shape) == expected
    assert tuple(block.compute_output_shape(shape)) == expected


def test_conv_norm_act_values(rng):
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    block = ConvNormAct(2, 4, strides=2)
    y = np_(block(x))
    conv = np_(block.conv(x)).astype("float64")
    ref = prelu(ref_instance_norm(conv, (1, 2)), 0.25)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    # One-parameter PReLU (torch.nn.PReLU()): a single shared slope initialised to 0.25.
    alpha = np_(block.act.alpha)
    assert alpha.size == 1 and float(alpha.reshape(-1)[0]) == 0.25
    assert block.count_params() == 3 * 3 * 3 * 4 + 4 + 1


def test_conv_norm_act_conv_only(rng):
    x = rng.normal(size=(1, 4, 4, 2)).astype("float32")
    block = ConvNormAct(2, 3, conv_only=True)
    y = np_(block(x))
    assert not hasattr(block, "norm") and not hasattr(block, "act")
    np.testing.assert_allclose(y, np_(block.conv(x)), rtol=1e-6, atol=1e-6)
    assert block.count_params() == 2 * 9 * 3 + 3


def test_residual_unit_identity_path(rng):
    x = rng.normal(size=(1, 6, 6, 4)).astype("float32")
    unit = ResidualUnit(2, 4, strides=1, subunits=2)
    y = np_(unit(x))
    assert unit.residual is None
    branch = x
    for sub in unit.units:
        branch = sub(branch)
    np.testing.assert_allclose(y, np_(branch) + x, rtol=1e-5, atol=1e-5)
    assert [u.strides for u in unit.units] == [1, 1]


def test_residual_unit_1x1_path(rng):
    x = rng.normal(size=(1, 6, 6, 3)).astype("float32")
    unit = ResidualUnit(2, 5, strides=1, subunits=1)
    y = np_(unit(x))
    assert y.shape == (1, 6, 6, 5)
    assert unit.residual is not None
    assert unit.residual.kernel_size == (1, 1) and unit.residual.strides == (1, 1)
    np.testing.assert_allclose(y, np_(unit.units[0](x)) + np_(unit.residual(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "rank, shape, strides, expected",
    [
        (2, (1, 8, 8, 4), 2, (1, 4, 4, 6)),
        (3, (1, 2, 4, 4, 4), (1, 2, 2), (1, 2, 2, 2, 6)),
        (3, (1, 2, 4, 4, 6), (1, 2, 2), (1, 2, 2, 2, 6)),  # same channels, still strided
    ],
)
def test_residual_unit_strided_path(rank, shape, strides, expected, rng):
    x = rng.normal(size=shape).astype("float32")
    unit = ResidualUnit(rank, 6, strides=strides, subunits=2)
    y = np_(unit(x))
    assert y.shape == expected
    assert unit.residual is not None
    assert unit.residual.kernel_size == (3,) * rank
    s = (strides,) * rank if isinstance(strides, int) else strides
    assert unit.residual.strides == s
    # Only the first sub-unit is strided.
    assert [u.conv.strides for u in unit.units] == [s, (1,) * rank]
    branch = np_(unit.units[1](unit.units[0](x)))
    np.testing.assert_allclose(y, branch + np_(unit.residual(x)), rtol=1e-5, atol=1e-5)


def test_residual_unit_last_conv_only():
    unit = ResidualUnit(2, 4, subunits=2, last_conv_only=True)
    unit(np.zeros((1, 4, 4, 4), "float32"))
    assert [u.conv_only for u in unit.units] == [False, True]
    clone = keras.layers.deserialize(keras.layers.serialize(unit))
    assert isinstance(clone, ResidualUnit)
    assert (clone.subunits, clone.last_conv_only, clone.filters) == (2, True, 4)


@pytest.mark.parametrize("alpha", [0.25, -0.5, 1.0, 1.7])
def test_prelu_values_and_gradients_for_every_slope(alpha, rng):
    from keras_sl.layers import PReLU

    x = rng.normal(size=(2, 5, 4, 3)).astype("float32")
    x[np.abs(x) < 1e-3] = 0.5  # no exact zeros: gradients there are backend-defined
    layer = PReLU(alpha_initializer=alpha)
    y = np_(layer(x))
    np.testing.assert_allclose(y, prelu(x, alpha), rtol=1e-6, atol=1e-6)
    # One SGD step with lr=1 on sum(y * w): alpha moves by -sum(w * min(x, 0)).
    model = keras.Sequential([keras.Input((5, 4, 3)), PReLU(alpha_initializer=alpha)])
    target = rng.normal(size=x.shape).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0),
                  loss=lambda t, p: keras.ops.sum(p * t) / x.shape[0], jit_compile=False)
    model.train_on_batch(x, target)
    expected = alpha - float(np.sum(target * np.minimum(x, 0)) / x.shape[0])
    np.testing.assert_allclose(np_(model.layers[0].alpha).reshape(-1)[0], expected, rtol=1e-4, atol=1e-4)


def test_prelu_max_min_form_has_the_reference_values_and_gradients(rng):
    from fast_parity import assert_matches_reference

    from keras_sl.layers.prelu import prelu

    x = rng.normal(size=(2, 5, 4, 3)).astype("float32")
    x[np.abs(x) < 1e-3] = 0.5  # no exact zeros: gradients there are backend-defined
    alpha = np.full((1, 1, 1, 1), -0.3, "float32")
    assert_matches_reference("prelu", "max_min_form", prelu, [x, alpha])


def test_prelu_weights_match_keras_prelu(rng):
    from keras_sl.layers import PReLU

    x = rng.normal(size=(1, 4, 4, 2, 3)).astype("float32")
    ours = PReLU()
    theirs = keras.layers.PReLU(shared_axes=[1, 2, 3, 4])
    ours.build(x.shape), theirs.build(x.shape)
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    assert ours.weights[0].name == theirs.weights[0].name == "alpha"
    theirs.set_weights([np.full((1, 1, 1, 1), -0.3, "float32")])
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(np_(ours(x)), np_(theirs(x)), atol=1e-6)
    assert PReLU.from_config(ours.get_config()).get_config() == ours.get_config()


# ---------------------------------------------------------------------------
# Convolution with groups and dilation, against torch.nn.functional
# ---------------------------------------------------------------------------
GROUPED_CASES = [
    # rank, groups, dilation, strides, transposed, data_format
    (1, 2, 2, 1, False, "channels_last"),
    (1, 4, 1, 2, False, "channels_first"),
    (1, 2, 2, 2, True, "channels_last"),
    (2, 4, 1, 1, False, "channels_last"),  # depthwise
    (2, 4, 2, 2, False, "channels_first"),  # depthwise, strided and dilated
    (2, 2, 1, 2, False, "channels_last"),
    (2, 1, 2, 2, False, "channels_last"),  # strides with dilation (TensorFlow's kernel takes neither)
    (2, 2, 2, 2, True, "channels_first"),
    (2, 4, 1, 2, True, "channels_last"),
    (3, 4, 1, 1, False, "channels_last"),  # depthwise 3-D
    (3, 2, 2, (1, 2, 2), False, "channels_first"),
    (3, 1, 2, 1, False, "channels_last"),
    (3, 2, 1, 2, True, "channels_last"),
    (3, 1, 2, 2, True, "channels_first"),
]


@pytest.mark.parametrize("rank,groups,dilation,strides,transposed,data_format", GROUPED_CASES)
@pytest.mark.parametrize("execution", ["auto", "reference"])
def test_grouped_and_dilated_convolution_matches_torch(rank, groups, dilation, strides, transposed, data_format,
                                                       execution, rng):
    """Outputs and gradients (input, kernel, bias) equal PyTorch's
    ``conv{1,2,3}d`` / ``conv_transpose{1,2,3}d`` with the same groups,
    dilation and MONAI padding, through the backend's own paths ("auto") and
    the keras.ops reference."""
    torch = pytest.importorskip("torch")
    if execution == "reference" and keras.backend.backend() == "jax" and not transposed:
        pytest.skip("no path of keras_sl.fast applies to these convolutions on JAX: 'auto' is the reference")
    from fast_parity import outputs_and_gradients

    from keras_sl.fast import dispatch

    cin, cout, k = 4, 8, 3
    s = (strides,) * rank if isinstance(strides, int) else strides
    x = rng.normal(size=(2, *(7, 6, 5)[:rank], cin)).astype("float32")
    if data_format == "channels_first":
        x = np.moveaxis(x, -1, 1)
    layer = Convolution(rank, cout, kernel_size=k, strides=strides, dilation=dilation, groups=groups,
                        transposed=transposed, data_format=data_format)
    layer.build(x.shape)
    randomize(layer, rng)
    kernel, bias = np_(layer.kernel), np_(layer.bias)
    with contextlib.ExitStack() as stack:
        if execution == "reference":
            for op in ("conv", "conv_transpose", "keras_conv"):
                stack.enter_context(dispatch.forced(op, dispatch.REFERENCE))
        used = stack.enter_context(dispatch.recording())
        (y,), grads = outputs_and_gradients(layer, [x], [layer.kernel, layer.bias])
    if keras.backend.backend() == "jax" and not transposed:  # why the reference variant is skipped there
        assert {path for _, path in used} == {dispatch.REFERENCE}

    # PyTorch: weight (out, in / groups, *k) or, transposed, (in, out / groups, *k).
    tx = torch.tensor(x if data_format == "channels_first" else np.moveaxis(x, -1, 1), requires_grad=True)
    tw = torch.tensor(np.moveaxis(kernel, (-1, -2), (0, 1)).copy(), requires_grad=True)
    tb = torch.tensor(bias, requires_grad=True)
    pad = dilation * (k - 1) // 2
    if transposed:
        fn = getattr(torch.nn.functional, f"conv_transpose{rank}d")
        ref = fn(tx, tw, tb, stride=s, padding=pad, output_padding=tuple(v - 1 for v in s), groups=groups,
                 dilation=dilation)
    else:
        fn = getattr(torch.nn.functional, f"conv{rank}d")
        ref = fn(tx, tw, tb, stride=s, padding=pad, dilation=dilation, groups=groups)
    if data_format == "channels_last":
        ref_out = ref.detach().numpy()
        cot = torch.tensor(np.moveaxis(np.random.default_rng(100).normal(size=np.moveaxis(ref_out, 1, -1).shape)
                                       .astype("float32"), -1, 1))
        ref_out = np.moveaxis(ref_out, 1, -1)
    else:
        ref_out = ref.detach().numpy()
        cot = torch.tensor(np.random.default_rng(100).normal(size=ref_out.shape).astype("float32"))
    assert y.shape == ref_out.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, ref_out, atol=1e-5, rtol=1e-5)
    gx, gw, gb = torch.autograd.grad((ref * cot).sum(), [tx, tw, tb])
    gx = gx.numpy() if data_format == "channels_first" else np.moveaxis(gx.numpy(), 1, -1)
    np.testing.assert_allclose(grads[0], gx, atol=1e-5 * max(1.0, np.abs(gx).max()), rtol=1e-5)
    np.testing.assert_allclose(grads[1], np.moveaxis(gw.numpy(), (0, 1), (-1, -2)),
                               atol=1e-5 * max(1.0, np.abs(gw.numpy()).max()), rtol=1e-5)
    np.testing.assert_allclose(grads[2], gb.numpy(), atol=1e-5 * max(1.0, np.abs(gb.numpy()).max()), rtol=1e-5)


def test_grouped_convolution_validation_and_config():
    with pytest.raises(ValueError, match="groups"):
        Convolution(2, 6, groups=4)  # 4 does not divide 6 filters
    layer = Convolution(2, 6, groups=3, dilation=(1, 2))
    with pytest.raises(ValueError, match="divide"):
        layer.build((1, 8, 8, 4))
    layer.build((1, 8, 8, 6))
    assert tuple(layer.kernel.shape) == (3, 3, 2, 6)
    clone = Convolution.from_config(layer.get_config())
    assert (clone.groups, clone.dilation) == (3, (1, 2))
    with pytest.raises(ValueError, match="dilation 1 along the lifted axis"):
        Convolution(3, 4, dilation=2, lifted_pattern=(0, 0))
    # A config saved before groups and dilation existed still loads.
    old = {k: v for k, v in layer.get_config().items() if k not in ("groups", "dilation")}
    assert (Convolution.from_config(old).groups, Convolution.from_config(old).dilation) == (1, (1, 1))


def test_convolution_refuses_a_lifted_length_it_was_not_built_for():
    conv = Convolution(3, 4, 3, groups=4)
    conv.build((None, 1, 8, 8, 4))
    with pytest.raises(ValueError, match="built for inputs of length 1 along the lifted axis"):
        conv(np.zeros((2, 2, 8, 8, 4), "float32"))
    conv(np.zeros((2, 1, 8, 8, 4), "float32"))  # the length it was built for
