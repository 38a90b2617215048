"""keras_sl MiDaS decoder: parity with the original MidasNet decoder, thop counts, the rank-3 (SL) twin."""

import json

import keras
import numpy as np
import pytest
from harness import forward_numpy, shapes_only
from keras import ops

from keras_sl.models.midas import FeatureFusionBlock, MiDaSDecoder, ResidualConvUnit, load_midas_state
from keras_sl.models.midas.midas_decoder import (
    MIDAS_CHANNELS, MIDAS_FEATURES, SL_MIDAS_DEPTH, SL_MIDAS_FEATURES, SL_MIDAS_HEAD_CHANNELS,
)
from keras_sl.profiler import _graph_macs
from reference_fixtures import REFERENCE, assert_close, load_fixture, to_channels_first, to_channels_last

FIXTURE_CHANNELS = (16, 32, 64, 128)
NEVER_RUN_PREFIX = "scratch.refinenet4.resConfUnit1."
#: The small output maps: besides 1e-4 absolute, within 1e-3 of the reference relatively.
SMALL_OUTPUTS = ("depth_prerelu", "depth")


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def forward(model, inputs):
    """Outputs as NumPy, any structure (see ``harness.forward_numpy``)."""
    return forward_numpy(model, [np.asarray(x) for x in inputs])




def trainable_params(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)



def to_reference_layout(name: str, value: np.ndarray, channels_last: bool = True) -> np.ndarray:
    """Our tensor in the fixture's layout: NCHW, ``depth`` squeezed on the channel axis (MidasNet's squeeze)."""
    value = to_channels_first(value) if channels_last else value
    return value[:, 0] if name == "depth" else value


def check_outputs(outputs: dict, fixture, channels_last: bool = True, what: str = "") -> None:
    assert set(outputs) == {k[len("out_"):] for k in fixture.outputs}
    for name, value in outputs.items():
        actual, expected = to_reference_layout(name, value, channels_last), fixture.outputs[f"out_{name}"]
        assert_close(actual, expected, f"{name}{what}")
        if name in SMALL_OUTPUTS:  # std ~0.01-0.02: also a relative bar
            scale = float(np.abs(expected).max())
            assert float(np.abs(actual - expected).max()) <= 1e-3 * scale, f"{name}{what}: relative error > 1e-3"
            assert_close(actual, expected, f"{name}{what} (elementwise rtol 1e-3)", atol=1e-6, rtol=1e-3)


# ---------------------------------------------------------------------------
# Parity with the original (../shared/reference/midas)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture():
    return load_fixture("midas")


@pytest.fixture(scope="module")
def loaded(fixture):
    """The fixture's decoder (features 16 on [16,32,64,128]) with its weights,
    its inputs (finest first, channels last) and every named output."""
    constructor = fixture.config["constructor"]
    assert tuple(constructor["_make_scratch"]["in_shape"]) == FIXTURE_CHANNELS
    decoder = MiDaSDecoder(channels=FIXTURE_CHANNELS, features=constructor["MidasNet"]["features"],
                           non_negative=constructor["MidasNet"]["non_negative"])
    used = load_midas_state(decoder, fixture.weights)
    assert used == {k for k in fixture.weights if not k.startswith(NEVER_RUN_PREFIX)}
    inputs = [to_channels_last(fixture.inputs[f"in_layer{i}"]) for i in range(1, 5)]
    return decoder, inputs, forward(decoder.intermediates(), inputs)


@pytest.mark.reference
def test_midas_matches_reference(fixture, loaded):
    check_outputs(loaded[2], fixture)


@pytest.mark.reference
def test_midas_channels_first_matches_reference(fixture, loaded):
    """The same weights in a channels-first decoder, fed the fixture's NCHW arrays as they are."""
    decoder = MiDaSDecoder(channels=FIXTURE_CHANNELS, features=16, data_format="channels_first")
    load_midas_state(decoder, fixture.weights)
    inputs = [fixture.inputs[f"in_layer{i}"] for i in range(1, 5)]
    check_outputs(forward(decoder.intermediates(), inputs), fixture, channels_last=False, what=" (channels_first)")


def test_midas_structure(fixture, loaded):
    decoder = loaded[0]
    assert decoder.get_layer("refinenet4").resConfUnit1 is None  # built by the original, never run
    assert all(decoder.get_layer(f"refinenet{i}").resConfUnit1 is not None for i in (1, 2, 3))
    never_run = sum(v.size for k, v in fixture.weights.items() if k.startswith(NEVER_RUN_PREFIX))
    assert decoder.count_params() == fixture.config["weights"]["n_params_total"] - never_run
    assert [tuple(t.shape) for t in decoder.inputs] == [(None, None, None, c) for c in FIXTURE_CHANNELS]
    assert [t.shape[-1] for t in decoder.outputs] == [1]
    assert set(decoder.intermediate_names()) == set(loaded[2])
    assert decoder.stride_multiple == (8, 8)
    # Both resamplings are F.interpolate calls in the original: 0 MACs under thop.
    assert not decoder.get_layer("output_conv_1").count_macs
    assert decoder.get_layer("output_conv_1").align_corners is False
    assert decoder.get_layer("refinenet1").align_corners is True
    assert decoder.get_layer("layer1_rn").use_bias is False


def test_midas_converter_errors(fixture, loaded):
    decoder, inputs, outputs = loaded
    state = dict(fixture.weights)
    with pytest.raises(KeyError, match="scratch.output_conv.4.bias"):
        load_midas_state(decoder, {k: v for k, v in state.items() if k != "scratch.output_conv.4.bias"})
    with pytest.raises(ValueError, match="scratch.extra.weight"):
        load_midas_state(decoder, {**state, "scratch.extra.weight": np.zeros(3, "float32")})
    with pytest.raises(ValueError, match="scratch.layer1_rn.weight"):  # shape mismatch
        load_midas_state(decoder, {**state, "scratch.layer1_rn.weight": np.zeros((16, 8, 3, 3), "float32")})
    # The encoder's keys (MidasNet's pretrained.*) are left alone; the never-run unit is optional.
    lean = {k: v for k, v in state.items() if not k.startswith(NEVER_RUN_PREFIX)}
    assert load_midas_state(decoder, {**lean, "pretrained.layer1.0.weight": np.zeros(1)}) == set(lean)
    # Without projections: the layer*_rn keys are reported, and load once dropped (bare prefix).
    bare = MiDaSDecoder((16,) * 4, features=16, use_projections=False)
    with pytest.raises(ValueError, match="use_projections=True"):
        load_midas_state(bare, state)
    rest = {k[len("scratch."):]: v for k, v in lean.items() if "_rn." not in k}
    assert load_midas_state(bare, rest, prefix="") == set(rest)
    rn = [outputs[f"layer{i}_rn"] for i in range(1, 5)]
    np.testing.assert_allclose(forward(bare, rn), outputs["depth"], atol=1e-6)


def test_midas_config_round_trip():
    decoder = MiDaSDecoder(FIXTURE_CHANNELS, features=16)
    config = decoder.get_config()
    json.dumps(config)
    assert MiDaSDecoder.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(decoder))
    assert type(revived) is MiDaSDecoder and revived.get_config() == config
    assert [w.shape for w in revived.weights] == [w.shape for w in decoder.weights]
    with shapes_only():  # never run
        twin = MiDaSDecoder((8,) * 3, features=8, head_channels=(4, 2), use_projections=False, num_classes=2,
                            non_negative=False, spatial_dims=3, lifted_scale=2, data_format="channels_first",
                            input_shapes=[(8, 4, 16, 16), (8, 2, 8, 8), (8, 1, 4, 4)],
                            kernel_initializer="he_normal", name="tiny")
        assert MiDaSDecoder.from_config(twin.get_config()).get_config() == twin.get_config()
    assert twin.get_config()["kernel_initializer"]["class_name"] == "HeNormal"
    assert tuple(twin.outputs[0].shape) == (None, 2, 16, 64, 64)  # lifted axis x2 per level (lifted_scale=2)
    assert twin.stride_multiple == (4, 4, 4)
    for layer in (ResidualConvUnit(4, spatial_dims=3), FeatureFusionBlock(4, scale_factor=(1, 2, 2), spatial_dims=3)):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


def test_midas_argument_errors():
    with pytest.raises(ValueError, match="features=16"):
        MiDaSDecoder((16, 32), features=16, use_projections=False)
    with pytest.raises(ValueError, match="input_shapes"):
        MiDaSDecoder((16, 32), features=16, input_shapes=[(8, 8, 16)])
    with pytest.raises(ValueError, match="scale_factor"):
        FeatureFusionBlock(4, scale_factor=(2, 2), spatial_dims=3)


# ---------------------------------------------------------------------------
# MACs and parameters (thop 0.1.1 on the original, table6.json)
# ---------------------------------------------------------------------------
def _table6_rows():
    path = REFERENCE / "midas" / "table6.json"
    return json.loads(path.read_text())["results"] if path.is_file() else []


def _row_kind(row) -> str:
    what = row["what"]
    return "fusion_and_head" if what.startswith("refinenet4..1") else "projections" if "alone" in what else "full"


def _paper_model(kind: str, image: int):
    sizes = [image // s for s in (4, 8, 16, 32)]
    channels = (MIDAS_FEATURES,) * 4 if kind == "fusion_and_head" else MIDAS_CHANNELS
    with shapes_only():
        return MiDaSDecoder(channels, MIDAS_FEATURES, use_projections=kind != "fusion_and_head",
                            input_shapes=[(s, s, c) for s, c in zip(sizes, channels)])


@pytest.mark.parametrize("row", _table6_rows(), ids=lambda r: f"{r['image']}-{_row_kind(r)}")
def test_midas_macs_params_match_thop(row):
    """thop 0.1.1 on the original MidasNet decoder (features 256, ResNeXt-101
    channels), 224 and 384: exact (the layer*_rn row as full minus the rest)."""
    kind = _row_kind(row)
    if kind == "projections":
        full, rest = _paper_model("full", row["image"]), _paper_model("fusion_and_head", row["image"])
        macs, params = _graph_macs(full) - _graph_macs(rest), trainable_params(full) - trainable_params(rest)
    else:
        model = _paper_model(kind, row["image"])
        macs, params = _graph_macs(model), trainable_params(model)
    assert (macs, params) == (int(row["macs"]), int(row["params"]))


def test_midas_table6_rows_present():
    if not (REFERENCE / "midas" / "table6.json").is_file():
        pytest.skip("reference fixture 'midas' not found (development machines only)")
    rows = _table6_rows()
    assert len(rows) == 6
    paper = json.loads((REFERENCE / "midas" / "table6.json").read_text())["paper_table_vi"]
    row = next(r for r in rows if r["image"] == 224 and _row_kind(r) == "fusion_and_head")
    # Ours = thop's 15.3193 G / 8.5931 M; the paper's row is 15.4028 G / 8.5934 M (0.55 % / 0.004 % above).
    model = _paper_model("fusion_and_head", 224)
    assert abs(_graph_macs(model) / (paper["gmacs"] * 1e9) - 1) < 0.006
    assert abs(trainable_params(model) / (paper["mparams"] * 1e6) - 1) < 0.0001
    assert _graph_macs(model) == int(row["macs"])


#: SL-MiDaS measured on this port (regression values): features 16, levels
#: lifted to depth 16, in-plane 56/28/14/7 (a 224x224 image), head (8, 16).
#: The paper's Table VI row: 5.3586 G / 0.1055 M (construction not given).
SL_MACS, SL_PARAMS = 5_312_634_880, 103_945


def test_sl_midas_macs_params():
    with shapes_only():
        twin = MiDaSDecoder((SL_MIDAS_FEATURES,) * 4, SL_MIDAS_FEATURES, head_channels=SL_MIDAS_HEAD_CHANNELS,
                            use_projections=False, spatial_dims=3,
                            input_shapes=[(SL_MIDAS_DEPTH, s, s, SL_MIDAS_FEATURES) for s in (56, 28, 14, 7)])
    assert tuple(twin.outputs[0].shape) == (None, SL_MIDAS_DEPTH, 224, 224, 1)
    assert (_graph_macs(twin), trainable_params(twin)) == (SL_MACS, SL_PARAMS)
    assert abs(SL_MACS / 5.3586e9 - 1) < 0.01 and abs(SL_PARAMS / 0.1055e6 - 1) < 0.02


# ---------------------------------------------------------------------------
# The rank-3 (SL) twin
# ---------------------------------------------------------------------------
def _lift_kernel(kernel):
    """A 2-D kernel (*k, in, out) as a 3-D one with zero off-centre depth taps:
    the 3-D layer then processes every lifted slice on its own."""
    k = kernel.shape[0]
    out = np.zeros((k, *kernel.shape), "float32")
    out[k // 2] = kernel
    return out


def test_sl_midas_slices_equal_2d(loaded, rng):
    """The rank-3 decoder with the 2-D weights at the kernels' centre depth
    (no mixing across the lifted axis) maps each lifted slice exactly as the
    2-D decoder does: the x2 resamplings scale the in-plane axes bilinearly
    (align_corners True in the fusion blocks, False in the head) and keep
    the lifted axis (never interpolated)."""
    decoder, inputs, outputs = loaded
    twin = MiDaSDecoder(FIXTURE_CHANNELS, features=16, spatial_dims=3)
    assert [w.path for w in twin.weights] == [w.path for w in decoder.weights]
    twin.set_weights([_lift_kernel(w) if w.ndim == 4 else w for w in decoder.get_weights()])
    other = [rng.normal(size=x[:1].shape).astype("float32") for x in inputs]
    lifted = [np.stack([x[:1], y], axis=1) for x, y in zip(inputs, other)]  # (1, 2, h, w, c): depth 2
    depth = forward(twin, lifted)
    assert depth.shape == (1, 2, 64, 64, 1)
    np.testing.assert_allclose(depth[:, 0], outputs["depth"][:1], atol=1e-5)
    np.testing.assert_allclose(depth[:, 1], forward(decoder, other), atol=1e-5)


def test_sl_midas_forward(rng):
    """SL-MiDaS on lifted levels of depth 4: the lifted axis keeps its length
    through every fusion block and the head; the 3x3x3 kernels mix slices."""
    twin = MiDaSDecoder((8,) * 4, features=8, head_channels=SL_MIDAS_HEAD_CHANNELS, use_projections=False,
                        spatial_dims=3)
    xs = [rng.normal(size=(1, 4, s, s, 8)).astype("float32") for s in (8, 4, 2, 1)]
    inter = forward(twin.intermediates(), xs)
    assert [inter[f"path_{i}"].shape for i in (4, 3, 2, 1)] == [(1, 4, s, s, 8) for s in (2, 4, 8, 16)]
    assert inter["depth"].shape == (1, 4, 32, 32, 1)
    assert np.isfinite(inter["depth"]).all() and (inter["depth"] >= 0).all()
    prerelu = inter["depth_prerelu"]
    assert prerelu.std() > 0 and not np.allclose(prerelu[:, 0], prerelu[:, 1])
