"""Instance norm with the PReLU and the residual sum in one pass (XLA-fused on
JAX and on TensorFlow's CPU), its wide statistics and torch's one-pass
kernels (:mod:`keras_sl.fast.fused_norm`, :mod:`keras_sl.fast.torch_kernels`):
same values and gradients as the reference on every backend and path."""

import keras
import numpy as np
import pytest
from keras import ops

from fast_parity import assert_matches_reference
from keras_sl.blocks import ConvNormAct, ResidualUnit
from keras_sl.fast import dispatch
from keras_sl.fast.fused_norm import wide_fold, xla_fusion
from keras_sl.layers import Convolution, InstanceNorm

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the XLA-compiled norm is TensorFlow's CPU path (JAX compiles whole steps anyway)",
)


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def ref_norm(x, axes, eps=1e-5):
    x = x.astype("float64")
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


def ref_prelu(x, alpha):
    return np.where(x > 0, x, alpha * x)


@pytest.mark.parametrize(
    "length, channels, fold",
    [(131072, 8, 16), (65536, 1, 128), (4096, 16, 8), (100, 200, 1), (7, 8, 1), (6, 8, 2), (None, 8, 1)],
)
def test_wide_fold_makes_rows_of_128_values_where_it_divides(length, channels, fold):
    assert wide_fold(length, channels) == fold


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("shape", [(2, 6, 5, 3), (2, 16, 8, 4, 8), (1, 32, 32, 1)])
@pytest.mark.parametrize("alpha", [0.25, -0.7])
def test_norm_prelu_residual_in_one_call(data_format, shape, alpha, rng):
    x = (rng.normal(size=shape) * 2.0 + 3.0).astype("float32")
    residual = rng.normal(size=shape).astype("float32")
    channels = shape[-1]
    shift = rng.normal(size=(channels,)).astype("float32")
    axes = tuple(range(1, len(shape) - 1))
    expected = ref_prelu(ref_norm(x, axes), alpha) + residual
    if data_format == "channels_first":
        x, residual, expected = (np.moveaxis(a, -1, 1) for a in (x, residual, expected))
    norm = InstanceNorm(data_format=data_format)
    slope = np.full((1,) * (len(shape) - 1), alpha, "float32")
    y = norm(x, shift=shift, prelu_alpha=slope, residual=residual)
    np.testing.assert_allclose(np_(y), expected, atol=2e-4)
    # Without the extras: the plain norm.
    np.testing.assert_allclose(np_(norm(x)), np.moveaxis(ref_norm(np.moveaxis(x, 1, -1), axes), -1, 1)
                               if data_format == "channels_first" else ref_norm(x, axes), atol=2e-4)


def test_compact_norm_with_prelu_and_residual(rng):
    """A compact lifted input (slice j stands for counts[j] equal slices):
    the statistics and the fused steps are those of the full tensor."""
    counts = (1, 6, 1)
    compact = (rng.normal(size=(2, 5, 4, 3, 2)) + 1.0).astype("float32")  # (B, H, W, stored, C)
    full = np.repeat(compact, counts, axis=3)
    residual = rng.normal(size=compact.shape).astype("float32")
    norm = InstanceNorm(lifted_counts=counts, lifted_axis=3)
    y = np_(norm(compact, prelu_alpha=np.full((1, 1, 1, 1), 0.1, "float32"), residual=residual))
    reference = ref_prelu(ref_norm(full, (1, 2, 3)), 0.1)[:, :, :, [0, 1, 7]] + residual
    np.testing.assert_allclose(y, reference, atol=2e-4)


def test_large_mean_small_spread_stays_accurate_with_wide_statistics(rng):
    """Mean 50x the spread: the single-pass wide statistics lose about three
    digits of the variance; outputs stay within 3e-3 of float64."""
    x = (rng.normal(size=(2, 64, 64, 8)) + 50.0).astype("float32")
    np.testing.assert_allclose(np_(InstanceNorm()(x)), ref_norm(x, (1, 2)), atol=3e-3)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_residual_unit_sum_is_the_same_fused_or_not(dropout, rng):
    """The residual is added in the last unit's fused norm (no dropout) or
    after it (dropout): both equal the unit's definition."""
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    unit = ResidualUnit(2, 4, subunits=2, dropout=dropout)
    y = np_(unit(x, training=False))
    branch = x
    for sub in unit.units:
        branch = sub(branch, training=False)
    np.testing.assert_allclose(y, np_(branch) + x, atol=1e-5)


def test_conv_only_unit_adds_the_residual(rng):
    x = rng.normal(size=(1, 6, 6, 3)).astype("float32")
    block = ConvNormAct(2, 3, conv_only=True)
    r = rng.normal(size=(1, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(np_(block(x, residual=r)), np_(block.conv(x)) + r, atol=1e-5)


@pytest.mark.parametrize("strategy,lifted_last", [("native", False), ("banded", False), ("banded", True)])
def test_one_bare_convolution_unit_adds_its_input_inside_the_kernel(monkeypatch, strategy, lifted_last, rng):
    """The top of a UNet with one residual sub-unit, ``x + conv(x)``, runs as
    one convolution (identity at the centre tap): same outputs, and after a
    training step the same weights, as the explicit sum."""
    x = rng.normal(size=(2, 6, 8, 7, 4)).astype("float32")
    y = rng.normal(size=(2, 6, 8, 7, 4)).astype("float32")
    results = []
    for folded in (True, False):
        if not folded:
            monkeypatch.setattr(ResidualUnit, "_one_convolution", property(lambda self: False))
        keras.utils.set_random_seed(2)
        unit = ResidualUnit(3, 4, subunits=1, last_conv_only=True, strategy=strategy, lifted_axis_last=lifted_last)
        model = keras.Sequential([keras.Input(x.shape[1:]), unit])
        assert unit._one_convolution == folded
        before = np_(model(x))
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse", jit_compile=False)
        model.train_on_batch(x, y)
        results.append((before, model.get_weights()))
    (a, wa), (b, wb) = results
    np.testing.assert_allclose(a, b, atol=1e-5)
    for u, v in zip(wa, wb):
        np.testing.assert_allclose(u, v, atol=1e-5)


def test_convolution_add_input_needs_a_shape_preserving_convolution(rng):
    x = rng.normal(size=(1, 6, 6, 3)).astype("float32")
    conv = Convolution(2, 3)
    np.testing.assert_allclose(np_(conv(x, add_input=True)), np_(conv(x)) + x, atol=1e-5)
    for bad in (Convolution(2, 4), Convolution(2, 3, strides=2), Convolution(2, 3, transposed=True, strides=2)):
        with pytest.raises(ValueError, match="add_input=True needs"):
            bad(x, add_input=True)


def _norm_args(rng, shape=(2, 12, 12, 4, 8)):
    x = (rng.normal(size=shape) * 2 + 1).astype("float32")
    residual = rng.normal(size=shape).astype("float32")
    shift = rng.normal(size=(shape[-1],)).astype("float32")
    slope = np.full((1,) * (len(shape) - 1), -0.3, "float32")
    return x, residual, shift, slope


@TF_ONLY
def test_tensorflow_compiles_the_norm_on_cpu_and_can_be_told_not_to(monkeypatch, rng):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("the XLA-fused norm is a CPU path; this machine has a GPU")
    x = rng.normal(size=(1, 4, 4, 2)).astype("float32")

    def path():
        chosen = dispatch.resolve("instance_norm", InstanceNorm(), x, None, None, None, False)
        return None if chosen is None else chosen.name

    assert path() == "xla_compiled"
    with xla_fusion(False):
        assert path() is None
    assert path() == "xla_compiled"
    monkeypatch.setenv("KERAS_SL_XLA_FUSION", "0")
    assert path() is None


@TF_ONLY
@pytest.mark.parametrize("training", [False, True])
def test_tensorflow_xla_norm_matches_unfused_values_and_gradients(training, rng):
    """Same block, same weights: the XLA-compiled norm and the op-by-op one
    agree on outputs and on the gradients of every weight and the input."""
    unit = ResidualUnit(3, 8, subunits=2)
    x = rng.normal(size=(2, 12, 12, 4, 8)).astype("float32")
    unit(x)
    for w in unit.weights:
        w.assign(rng.normal(size=tuple(w.shape)).astype("float32") * 0.3)
    assert_matches_reference("instance_norm", "xla_compiled", lambda t: unit(t, training=training), [x],
                             unit.trainable_weights, atol=1e-4, rtol=1e-3)
    assert unit.units[-1].norm._xla_normalize is not None  # the compiled path ran


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("path", ["wide_rows", "rows"])
def test_row_statistics_have_the_reference_values_and_gradients(data_format, path, rng):
    """Moments over the leading axes on a (B, N, K) view: the plain norm
    (channels last) and a compact lifted-last one (per-slice statistics);
    a channels-first compact norm has no leading axes (the reference runs)."""
    x, residual, shift, slope = _norm_args(rng, (2, 8, 6, 3, 4))
    if data_format == "channels_first":
        x = np.moveaxis(x, -1, 1)
    for norm in (InstanceNorm(data_format=data_format),
                 InstanceNorm(data_format=data_format, lifted_counts=(1, 5, 2), lifted_axis=3 if
                              data_format == "channels_last" else 4)):
        runs = data_format == "channels_last"
        assert_matches_reference("moments", path, lambda t: norm(t, shift=shift, prelu_alpha=slope), [x],
                                 must_run=runs, atol=1e-4)


def test_trailing_layer_norm_has_the_reference_values_and_gradients(rng):
    x, residual, shift, slope = _norm_args(rng, (2, 8, 6, 3, 4))
    x = np.moveaxis(x, -1, 1)
    norm = InstanceNorm(data_format="channels_first")
    for training in (False, True):
        assert_matches_reference("standardize", "trailing_layer_norm",
                                 lambda t: norm(t, shift=shift, training=training, prelu_alpha=slope), [x], atol=1e-4)


@pytest.mark.parametrize("op,path", [("scale", "torch_addcmul"), ("prelu", "torch_native_prelu")])
def test_torch_one_pass_kernels_have_the_reference_values_and_gradients(op, path, rng):
    if keras.backend.backend() != "torch":
        pytest.skip("PyTorch kernels")
    x, residual, shift, slope = _norm_args(rng)
    norm = InstanceNorm()
    assert_matches_reference(op, path, lambda t, s: norm(t, shift=shift, prelu_alpha=s, residual=residual),
                             [x, slope], atol=1e-4)


def test_native_and_fusable_kernels_agree(rng):
    """torch runs PyTorch's one-pass prelu/addcmul, except when tracing for
    inductor (plain formulas it can fuse): same values either way (other
    backends always use the formulas)."""
    from keras_sl.fast.torch_kernels import traced_for_fusion

    x, residual, shift, slope = _norm_args(rng, (2, 8, 8, 4, 8))
    norm = InstanceNorm()
    with dispatch.recording() as used:
        native = np_(norm(x, shift=shift, prelu_alpha=slope, residual=residual))
    on_torch = keras.backend.backend() == "torch"
    assert (("prelu", "torch_native_prelu") in used) == on_torch
    assert (("scale", "torch_addcmul") in used) == on_torch
    with traced_for_fusion(), dispatch.recording() as used:
        fusable = np_(norm(x, shift=shift, prelu_alpha=slope, residual=residual))
    assert ("prelu", "torch_native_prelu") not in used and ("scale", "torch_addcmul") not in used
    np.testing.assert_allclose(native, fusable, atol=1e-5)
    np.testing.assert_allclose(native, ref_prelu(ref_norm(x, (1, 2, 3)), -0.3) + residual, atol=2e-4)
