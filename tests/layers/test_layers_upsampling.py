"""Upsample / interpolate against torch.nn.functional.interpolate, on every backend."""

import keras
import numpy as np
import pytest
from harness import run_layer_test

from keras_sl.layers import Upsample
from keras_sl.layers.upsampling import _dynamic_plan, _static_plan, interpolate

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}
MODES = [("nearest", False), ("nearest-exact", False), ("linear", False), ("linear", True)]
# Integer, non-integer and downsampling factors; 1.2 and 2.2 hit PyTorch's 2-D
# nearest shortcuts (out == in, out == 2 * in) that its 1-D / 3-D kernels lack.
SCALES = (2, 3, 1.5, 0.5, 1 / 3, 1.2, 2.2, 1.7, 0.75)
SIZES = (1, 3, 7, 13)


def torch_interpolate(x_ncl, mode, align_corners, **kwargs):
    rank = x_ncl.ndim - 2
    torch_mode = mode if mode.startswith("nearest") else TORCH_LINEAR[rank]
    ac = align_corners if mode == "linear" else None
    return F.interpolate(torch.from_numpy(x_ncl), mode=torch_mode, align_corners=ac, **kwargs).numpy()


def specs():
    for s in SCALES:
        yield dict(scale_factor=s)
    for s in SIZES:
        yield dict(size=s)
    yield dict(scale_factor=1.7, recompute_scale_factor=True)


def torch_matrix(n, rank, mode, ac, kw):
    """PyTorch's ``(n, out)`` resampling matrix along the first spatial axis:
    the images of the n basis vectors (as channels), the other axes of length 1
    kept (scale 1 / size 1)."""
    eye = np.eye(n, dtype="float32").reshape((1, n, n) + (1,) * (rank - 1))
    per_axis = {k: (v,) + (1,) * (rank - 1) for k, v in kw.items() if k in ("size", "scale_factor")}
    extra = {k: v for k, v in kw.items() if k == "recompute_scale_factor"}
    return torch_interpolate(eye, mode, ac, **per_axis, **extra).reshape(n, -1)


def plan_matrix(plan, n, out):
    matrix, dst = np.zeros((n, out), "float32"), np.arange(out)
    if plan is None:
        return np.eye(n, dtype="float32")
    if plan[0] in ("repeat", "gather"):
        matrix[dst // plan[1] if plan[0] == "repeat" else plan[1], dst] = 1
        return matrix
    _, i0, i1, w0, w1 = plan
    np.add.at(matrix, (i0, dst), w0)
    np.add.at(matrix, (i1, dst), w1)
    return matrix


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_index_plans_match_torch_for_many_lengths(rank):
    """The NumPy index/weight plan of an axis is PyTorch's resampling matrix for
    every length 1..16, mode and scale (backend-free)."""
    for n in range(1, 17):
        for kw in specs():
            scale = kw.get("scale_factor")
            out = kw.get("size") or int(n * scale)
            if out < 1:
                continue
            for mode, ac in MODES:
                mapping = None if kw.get("recompute_scale_factor") else scale
                plan = _static_plan(n, out, mapping, mode, ac, rank == 2 and mode == "nearest")
                np.testing.assert_allclose(plan_matrix(plan, n, out), torch_matrix(n, rank, mode, ac, kw),
                                           atol=1e-6, err_msg=f"{n} {kw} {mode} {ac}")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_interpolate_matches_torch(rank, data_format):
    rng = np.random.default_rng(0)
    shape = {1: (6,), 2: (5, 4), 3: (3, 4, 2)}[rank]
    x = rng.normal(size=(2, 3) + shape).astype("float32")
    xin = x if data_format == "channels_first" else np.moveaxis(x, 1, -1)
    # The index rules are checked exhaustively above; here the gathers, repeats
    # and blends on this backend, in both layouts, up and down.
    per_axis = {1: (2.2,), 2: (2.2, 0.5), 3: (1 / 3, 2.2, 1.5)}[rank]
    cases = [dict(scale_factor=2), dict(size=tuple(range(3, 3 + rank))), dict(scale_factor=per_axis)]
    for kw in cases:
        for mode, ac in MODES:
            want = torch_interpolate(x, mode, ac, **kw)
            got = interpolate(xin, mode=mode, align_corners=ac, data_format=data_format, **kw)
            got = keras.ops.convert_to_numpy(got)
            if data_format == "channels_last":
                got = np.moveaxis(got, -1, 1)
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{kw} {mode} {ac}")


def test_bilinear_means_trilinear_at_rank_3():
    x = np.random.default_rng(1).normal(size=(1, 2, 3, 4, 5)).astype("float32")
    layer = Upsample(scale_factor=2, mode="bilinear", align_corners=True, data_format="channels_first")
    want = F.interpolate(torch.from_numpy(x), scale_factor=2, mode="trilinear", align_corners=True).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), want, atol=1e-5)


@pytest.mark.parametrize("mode, ac", MODES)
def test_dynamic_plans_equal_static_plans(mode, ac):
    """The keras.ops plan (lengths known only at run time) equals the NumPy one."""
    if keras.backend.backend() == "jax":
        pytest.skip("JAX shapes are always static (and float64 needs x64): the run-time plan never runs")
    for n in (1, 2, 3, 5, 8):
        for kw in specs():
            scale, size = kw.get("scale_factor"), kw.get("size")
            out = size or int(n * scale)
            if out < 1:
                continue
            recompute = bool(kw.get("recompute_scale_factor"))
            shortcuts = mode == "nearest"
            static = _static_plan(n, out, None if recompute else scale, mode, ac, shortcuts)
            plan = _dynamic_plan(keras.ops.convert_to_tensor(n), size, scale, recompute, mode, ac, shortcuts)
            dynamic = [keras.ops.convert_to_numpy(t) for t in plan[1:]]
            dst = np.arange(out)
            if static is None:
                nearest = mode.startswith("nearest")
                static = ("gather", dst) if nearest else ("linear", dst, dst, np.ones(out), np.zeros(out))
            elif static[0] == "repeat":
                static = ("gather", dst // static[1])
            assert len(dynamic) == len(static) - 1
            for a, b in zip(dynamic, static[1:]):
                np.testing.assert_allclose(a, b, atol=1e-7, err_msg=f"{n} {kw}")


def test_unknown_spatial_sizes_in_a_tensorflow_graph():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only TensorFlow traces graphs with unknown spatial sizes")
    import tensorflow as tf

    x = np.random.default_rng(2).normal(size=(2, 5, 7, 3)).astype("float32")
    for kw in (dict(scale_factor=1.5, mode="bilinear"), dict(size=(4, 9), mode="bilinear", align_corners=True),
               dict(scale_factor=2.2, mode="nearest")):
        layer = Upsample(data_format="channels_last", **kw)
        fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
        got = np.moveaxis(fn(x).numpy(), -1, 1)
        want = torch_interpolate(np.moveaxis(x, -1, 1), "nearest" if kw["mode"] == "nearest" else "linear",
                                 kw.get("align_corners", False),
                                 **{k: v for k, v in kw.items() if k in ("scale_factor", "size")})
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_layer_shape_config_and_saving(tmp_path):
    layer = Upsample(scale_factor=(2, 1.5), mode="bilinear", align_corners=True, data_format="channels_last")
    y = run_layer_test(layer, (2, 4, 6, 3), expected_output_shape=(2, 8, 9, 3))
    assert Upsample(size=5, data_format="channels_first").compute_output_shape((1, 3, 2, 2, 2)) == (1, 3, 5, 5, 5)
    assert layer.compute_output_shape((None, None, 6, 3)) == (None, None, 9, 3)
    assert layer.get_config()["scale_factor"] == [2.0, 1.5]

    inputs = keras.Input((None, None, 3))
    assert tuple(Upsample(scale_factor=2)(inputs).shape) == (None, None, None, 3)
    model = keras.Sequential([keras.Input((4, 6, 3)), layer])
    path = tmp_path / "upsample.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=0)
    assert y.shape == (2, 8, 9, 3)
    assert loaded.layers[-1].get_config() == layer.get_config()


def test_macs_follow_thop():
    assert Upsample(scale_factor=2).macs((1, 4, 4, 3), (1, 8, 8, 3)) == 8 * 8 * 3
    assert Upsample(scale_factor=2, mode="bilinear").macs((1, 4, 4, 3), (1, 8, 8, 3)) == 11 * 8 * 8 * 3


def test_argument_errors():
    with pytest.raises(ValueError, match="exactly one"):
        Upsample(scale_factor=2, size=4)
    with pytest.raises(ValueError, match="exactly one"):
        Upsample()
    with pytest.raises(ValueError, match="align_corners"):
        Upsample(scale_factor=2, mode="nearest", align_corners=True)
    with pytest.raises(ValueError, match="mode"):
        Upsample(scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="entries"):
        Upsample(size=(4, 4), data_format="channels_last")(np.zeros((1, 2, 2, 2, 1), "float32"))
    with pytest.raises(ValueError, match=">= 1"):
        Upsample(scale_factor=0.2, data_format="channels_last")(np.zeros((1, 4, 4, 1), "float32"))
