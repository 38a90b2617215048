"""The execution-path registry (:mod:`keras_sl.fast.dispatch`), the paths an
SL-UNet takes on this backend, and the parity of the convolution-level paths
(memory layouts, grouped kernels) with the reference."""

from pathlib import Path

import keras
import numpy as np
import pytest

from fast_parity import assert_matches_reference
from keras_sl import SLUNet
from keras_sl.fast import dispatch
from keras_sl.layers.convolution import conv, conv_transpose

DOCS = Path(__file__).resolve().parents[2] / "docs" / "fast_paths.md"


@pytest.fixture
def demo_op():
    dispatch.register("demo", "half", applies=lambda x: x % 2 == 0)(lambda x: ("half", x // 2))
    dispatch.register("demo", "never_here", backends=("no_such_backend",))(lambda x: ("never_here", x))
    dispatch.register("demo", "on_request", pays=lambda x: False)(lambda x: ("on_request", x))
    yield lambda x, **kwargs: dispatch.run("demo", lambda x: ("reference", x), x, **kwargs)
    dispatch.unregister("demo")


def test_registry_picks_the_first_path_that_applies_and_pays_here(demo_op):
    assert demo_op(4) == ("half", 2)
    assert demo_op(3) == ("reference", 3)  # "half" does not apply; the others do not run here
    assert demo_op(3, prefer="on_request") == ("on_request", 3)
    assert demo_op(3, prefer="never_here") == ("never_here", 3)  # a preferred path runs wherever it applies
    assert demo_op(4, prefer=dispatch.REFERENCE) == ("reference", 4)
    assert demo_op(4, prefer="on_request") == ("half", 2)  # earlier paths keep their place
    with dispatch.forced("demo", "on_request"), dispatch.recording() as used:
        assert demo_op(4) == ("on_request", 4)
    assert used == [("demo", "on_request")]
    with dispatch.forced("demo", "half"):
        assert demo_op(3) == ("reference", 3)  # forced but not applicable: the reference
    with pytest.raises(ValueError, match="no path 'fastest'"):
        with dispatch.forced("demo", "fastest"):
            pass
    with pytest.raises(ValueError, match="names the reference"):
        dispatch.register("demo", dispatch.REFERENCE)


def test_every_path_is_documented():
    text = DOCS.read_text()
    for path in dispatch.paths():
        assert path.summary, path
        assert f"`{path.op}`" in text and f"`{path.name}`" in text, f"{path.op}/{path.name} missing from {DOCS}"


def _expected_paths() -> set:
    backend, device = keras.backend.backend(), dispatch.device()
    # The encoder runs compact (the lift's one slice); the prediction graph
    # sums the selected slices inside the last unit's kernel, by taps.
    expected = {("convolution", "compact_banded"), ("lifted_sum", "summed_kernel"), ("conv", "conv_by_taps")}
    if device == "cpu":
        expected |= {("convolution", "banded")}
    if backend == "jax" and device == "cpu":  # every up convolution is deferred (by phases)
        expected |= {("convolution_deferred", "shuffle_after_norm"), ("joint_convolution", "concatenated_kernels"),
                     ("moments", "wide_rows")}
    if backend == "tensorflow":
        expected |= {("moments", "wide_rows")} | ({("instance_norm", "xla_compiled")} if device == "cpu" else set())
    if backend == "torch":
        expected |= {("keras_conv", "torch_channels_last_view"), ("scale", "torch_addcmul"),
                     ("prelu", "torch_native_prelu"), ("moments", "rows"), ("pointwise", "torch_1x1_conv")}
    return expected


def test_the_paths_an_sl_unet_takes_here(rng):
    """The table of docs/fast_paths.md for the default SL-UNet, on this backend."""
    keras.utils.set_random_seed(0)
    model = SLUNet(levels=3, num_res_units=1, lift_depth=8, num_selected=2, input_shape=(16, 16, 3))
    x = rng.random((1, 16, 16, 3)).astype("float32")
    graph = model._inference_model(False)
    with dispatch.recording() as used:
        model(x)
        graph(x)
    ran = {entry for entry in used if entry[1] != dispatch.REFERENCE}
    assert ran == _expected_paths()


CONV_CASES = [(2, False, 2), (3, False, 1), (2, True, 2), (3, True, (1, 2, 2))]


@pytest.mark.parametrize("path", ["torch_channels_last_view", "tensorflow_channels_last"])
@pytest.mark.parametrize("rank,transposed,strides", CONV_CASES)
def test_native_layout_paths_have_the_reference_values_and_gradients(path, rank, transposed, strides, rng):
    data_format = "channels_last" if path == "torch_channels_last_view" else "channels_first"
    st = (strides,) * rank if isinstance(strides, int) else strides
    x = rng.normal(size=(2, 4, *(6, 5, 4)[:rank])).astype("float32")
    if data_format == "channels_last":
        x = np.moveaxis(x, 1, -1)
    w = (rng.normal(size=(3,) * rank + (4, 4)) * 0.3).astype("float32")
    fn = conv_transpose if transposed else conv
    assert_matches_reference("keras_conv", path, lambda x, w: fn(x, w, st, (1,) * rank, 1, data_format), [x, w])


@pytest.mark.parametrize("rank,strides,dilation,data_format", [
    (1, 1, 2, "channels_last"), (2, 1, 1, "channels_last"), (2, 2, 1, "channels_first"), (2, 1, 2, "channels_last"),
])
def test_depthwise_path_has_the_reference_values_and_gradients(rank, strides, dilation, data_format, rng):
    x = rng.normal(size=(2, *(9, 8)[:rank], 4)).astype("float32")
    if data_format == "channels_first":
        x = np.moveaxis(x, -1, 1)
    w = rng.normal(size=(3,) * rank + (1, 8)).astype("float32")  # multiplier 2
    st, dl = (strides,) * rank, (dilation,) * rank
    assert_matches_reference("conv", "tensorflow_depthwise", lambda x, w: conv(x, w, st, dl, 4, data_format), [x, w])


@pytest.mark.parametrize("rank,groups,strides,data_format", [
    (3, 2, 1, "channels_last"), (3, 4, 2, "channels_first"), (2, 2, 2, "channels_last"),
])
def test_groups_split_path_has_the_reference_values_and_gradients(rank, groups, strides, data_format, rng):
    x = rng.normal(size=(2, *(6, 7, 5)[:rank], 4)).astype("float32")
    if data_format == "channels_first":
        x = np.moveaxis(x, -1, 1)
    w = rng.normal(size=(3,) * rank + (4 // groups, 6 if groups == 2 else 4)).astype("float32")
    st = (strides,) * rank
    assert_matches_reference("conv", "tensorflow_groups_split",
                             lambda x, w: conv(x, w, st, (1,) * rank, groups, data_format), [x, w])


@pytest.mark.parametrize("kernel,dilation,depth,data_format", [
    ((3, 3, 3), (1, 1, 1), 5, "channels_last"), ((5, 3, 5), (2, 1, 2), 6, "channels_first"),
    ((3, 5, 5), (1, 1, 1), 1, "channels_last"),
])
def test_depthwise_3d_by_planes_has_the_reference_values_and_gradients(kernel, dilation, depth, data_format, rng):
    x = rng.normal(size=(2, depth, 7, 6, 4)).astype("float32")
    if data_format == "channels_first":
        x = np.moveaxis(x, -1, 1)
    w = rng.normal(size=(*kernel, 1, 4)).astype("float32")
    assert_matches_reference("conv", "depthwise_3d_by_planes",
                             lambda x, w: conv(x, w, (1, 1, 1), dilation, 4, data_format), [x, w])


def test_grouped_convolutions_take_the_tensorflow_paths_on_its_cpu(rng):
    from keras_sl.layers import Convolution

    backend, cpu = keras.backend.backend(), dispatch.device() == "cpu"
    cases = ((2, 4, "tensorflow_depthwise", ("tensorflow",)), (3, 4, "depthwise_3d_by_planes", ("tensorflow", "jax")),
             (3, 8, "tensorflow_groups_split", ("tensorflow",)))
    for rank, filters, expected, backends in cases:
        layer = Convolution(rank, filters, groups=4)
        with dispatch.recording() as used:
            layer(rng.normal(size=(1, *(6,) * rank, 4)).astype("float32"))
        assert (("conv", expected) in used) == (cpu and backend in backends), (rank, filters, expected)
