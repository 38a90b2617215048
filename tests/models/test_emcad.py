"""keras_sl EMCAD decoder: parity with the original PyTorch EMCAD/EMCADNet, thop counts, the rank-3 twin."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from harness import shapes_only

from keras_sl.layers import interpolate
from keras_sl.models.emcad import EMCAD, load_emcad_state
from keras_sl.profiler import _graph_macs
from reference_fixtures import REFERENCE, assert_close, load_fixture, to_channels_first, to_channels_last

PAPER_CHANNELS = (64, 128, 320, 512)
SL_CHANNELS = (16, 32, 64, 128)


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def trainable_params(model) -> int:
    """thop's parameter count: batch-norm statistics are buffers in PyTorch."""
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def stage_shapes(channels, sizes, depths=None):
    """Channels-last shapes (no batch), finest first."""
    if depths is None:
        return [(s, s, c) for s, c in zip(sizes, channels)]
    return [(d, s, s, c) for d, s, c in zip(depths, sizes, channels)]


def forward(model, inputs) -> list:
    """``model(inputs)`` as NumPy arrays. On JAX the graph runs as one jitted
    stateless call: one XLA compilation instead of one per operation (the
    fixture decoder: 26 s -> 7 s on a busy CPU)."""
    inputs = [np.asarray(x) for x in inputs]
    if keras.backend.backend() != "jax":
        return [np_(y) for y in model(inputs)]
    import jax

    call = jax.jit(lambda t, n, x: model.stateless_call(t, n, x)[0])
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    return [np.asarray(y) for y in call(trainable, non_trainable, inputs)]


# ---------------------------------------------------------------------------
# Parity with the original (../shared/reference/emcad)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture():
    return load_fixture("emcad")


@pytest.fixture(scope="module")
def loaded(fixture):
    """The fixture's decoder (channels [64,40,16,8] deepest first) with its
    weights, its inputs (finest first, channels last) and its outputs
    ``[d1, .., d4, head1, .., head4]`` (heads at stage resolution)."""
    channels = tuple(reversed(fixture.config["constructor"]["channels"]))
    decoder = EMCAD(channels=channels)
    used = load_emcad_state(decoder, fixture.weights)
    assert used == set(fixture.weights)
    inputs = [to_channels_last(fixture.inputs[f"in_x{i}"]) for i in range(1, 5)]
    full = keras.Model(decoder.inputs, decoder.stage_features_model().outputs + list(decoder.outputs))
    return decoder, inputs, forward(full, inputs)


@pytest.mark.reference
def test_emcad_matches_reference(fixture, loaded):
    decoder, _, outputs = loaded
    constructor = fixture.config["constructor"]
    assert (constructor["kernel_sizes"], constructor["expansion_factor"], constructor["lgag_ks"]) == (
        list(decoder.kernel_sizes), decoder.expansion_factor, decoder.lgag_ks)
    assert (constructor["dw_parallel"], constructor["add"], constructor["activation"]) == (
        decoder.dw_parallel, decoder.add, decoder.activation)
    for k in range(1, 5):
        assert_close(to_channels_first(outputs[k - 1]), fixture.outputs[f"out_d{k}"], f"d{k}")
        # EMCADNet: F.interpolate(out_head{k}(d{k}), scale_factor=2 ** (k + 1), mode="bilinear")
        p = interpolate(outputs[3 + k], scale_factor=2 ** (k + 1), mode="bilinear", align_corners=False)
        assert_close(to_channels_first(np_(p)), fixture.outputs[f"out_p{k}"], f"p{k}")


@pytest.mark.reference
def test_emcad_channels_first_matches_reference(fixture, loaded):
    """The same weights in a channels-first decoder, fed the fixture's NCHW arrays as they are."""
    decoder = EMCAD(channels=loaded[0].channels, data_format="channels_first")
    load_emcad_state(decoder, fixture.weights)
    inputs = [fixture.inputs[f"in_x{i}"] for i in range(1, 5)]
    for k, head in enumerate(forward(decoder, inputs), start=1):
        p = interpolate(head, scale_factor=2 ** (k + 1), mode="bilinear", data_format="channels_first")
        assert_close(np_(p), fixture.outputs[f"out_p{k}"], f"p{k} (channels_first)")


def test_emcad_structure(loaded):
    decoder = loaded[0]
    sab = decoder.get_layer("sab")
    assert len(sab._inbound_nodes) == 4  # one SAB module serves every stage
    assert [tuple(w.shape) for w in sab.weights] == [(7, 7, 2, 1)]
    assert decoder.stage_feature_names == ("mscb1", "mscb2", "mscb3", "mscb4")
    assert [t.shape[-1] for t in decoder.outputs] == [1, 1, 1, 1]
    assert [tuple(t.shape) for t in decoder.inputs] == [(None, None, None, c) for c in decoder.channels]


def test_emcad_converter_errors(fixture, loaded):
    decoder, inputs, outputs = loaded
    state = dict(fixture.weights)
    missing = {k: v for k, v in state.items() if k != "decoder.sab.conv.weight"}
    with pytest.raises(KeyError, match="decoder.sab.conv.weight"):
        load_emcad_state(decoder, missing)
    with pytest.raises(ValueError, match="decoder.extra.weight"):
        load_emcad_state(decoder, {**state, "decoder.extra.weight": np.zeros(3, "float32")})
    with pytest.raises(ValueError, match="out_head1.weight"):
        load_emcad_state(decoder, {**state, "out_head1.weight": np.zeros((1, 9, 1, 1), "float32")})
    # Keys outside both prefixes (EMCADNet's encoder) are ignored.
    assert load_emcad_state(decoder, {**state, "backbone.x": np.zeros(1)}) == set(state)
    # A bare EMCAD state dict (no prefix) into a decoder without heads.
    bare = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
    features = EMCAD(channels=decoder.channels, num_classes=None)
    with pytest.raises(ValueError, match="heads_prefix=None"):
        load_emcad_state(features, state)
    assert len(load_emcad_state(features, state, heads_prefix=None)) == len(bare)
    assert load_emcad_state(features, bare, prefix="") == set(bare)
    for k, d in enumerate(forward(features, inputs)):
        np.testing.assert_allclose(d, outputs[k], atol=1e-6, err_msg=f"d{k + 1}")


def test_emcad_config_round_trip(loaded):
    decoder = loaded[0]
    config = decoder.get_config()
    json.dumps(config)
    clone = EMCAD.from_config(config)
    assert clone.get_config() == config
    assert [(l.name, type(l)) for l in clone.layers] == [(l.name, type(l)) for l in decoder.layers]
    assert [w.shape for w in clone.weights] == [w.shape for w in decoder.weights]
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(decoder))
    assert type(revived) is EMCAD and revived.get_config() == config
    with shapes_only():  # never run
        tiny = EMCAD(channels=(8, 16), num_classes=None, spatial_dims=3, data_format="channels_first",
                     kernel_initializer="he_normal", name="tiny")
        assert EMCAD.from_config(tiny.get_config()).get_config() == tiny.get_config()
    assert config["kernel_initializer"] is None
    assert tiny.get_config()["kernel_initializer"]["class_name"] == "HeNormal"


# ---------------------------------------------------------------------------
# MACs and parameters (thop 0.1.1 on the original, table6.json)
# ---------------------------------------------------------------------------
def _table6_rows():
    path = REFERENCE / "emcad" / "table6.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text())["results"]


def _has_heads(row) -> bool:
    return "heads" in row["what"]  # "EMCAD decoder + EMCADNet heads (...)" / "EMCAD decoder only (...)"


@pytest.mark.parametrize("row", _table6_rows(),
                         ids=lambda r: f"{r['image']}-{'heads' if _has_heads(r) else 'decoder_only'}")
def test_emcad_macs_params_match_thop(row):
    """thop 0.1.1 on the original at 384 and 352 (PVTv2-b2 stage maps): exact."""
    heads = _has_heads(row)
    s = row["image"] // 4
    with shapes_only():
        model = EMCAD(PAPER_CHANNELS, num_classes=1 if heads else None,
                      input_shapes=stage_shapes(PAPER_CHANNELS, (s, s // 2, s // 4, s // 8)))
    assert _graph_macs(model) == int(row["macs"])
    assert trainable_params(model) == int(row["params"])


def test_emcad_thop_rows_present():
    if not (REFERENCE / "emcad" / "table6.json").is_file():
        pytest.skip("reference fixture 'emcad' not found (development machines only)")
    assert len(_table6_rows()) == 4


def test_sl_emcad_macs_params():
    """SL-EMCAD, the rank-3 twin at the paper setting (384x384 image: in-plane
    96/48/24/12, lifted depths 8/4/2/1 finest first). The paper's Table VI
    says 1.0467 GMACs / 0.2623 M params without saying how it adapted EMCAD;
    these are this port's counts (thop rules)."""
    with shapes_only():
        decoder = EMCAD(SL_CHANNELS, num_classes=None, spatial_dims=3,
                        input_shapes=stage_shapes(SL_CHANNELS, (96, 48, 24, 12), (8, 4, 2, 1)))
        with_heads = EMCAD(SL_CHANNELS, spatial_dims=3,
                           input_shapes=stage_shapes(SL_CHANNELS, (96, 48, 24, 12), (8, 4, 2, 1)))
    assert (_graph_macs(decoder), trainable_params(decoder)) == (SL_DECODER_MACS, SL_DECODER_PARAMS)
    assert (_graph_macs(with_heads), trainable_params(with_heads)) == (SL_HEADS_MACS, SL_HEADS_PARAMS)


# Measured on this port (regression values; see test_sl_emcad_macs_params).
SL_DECODER_MACS, SL_DECODER_PARAMS = 992_798_992, 192_015
SL_HEADS_MACS, SL_HEADS_PARAMS = 994_365_712, 192_259


# ---------------------------------------------------------------------------
# The rank-3 (SL) twin
# ---------------------------------------------------------------------------
def _lift_kernel(kernel, rng):
    """A 2-D kernel (*k, in, out) as a 3-D one whose centre depth slice is
    the 2-D kernel; the other slices are random (they only ever see the zero
    padding of a depth-1 input)."""
    k = kernel.shape[0]
    out = rng.normal(size=(k, *kernel.shape)).astype("float32")
    out[k // 2] = kernel
    return out


def test_sl_emcad_depth_one_equals_2d(loaded, rng):
    """At depth 1 every rank-3 block must reduce to its 2-D original: the 3-D
    decoder with the 2-D weights at the kernels' centre depth gives the 2-D
    outputs (SAB's 7x7x7 conv, CAB's pooling over all axes, grouped LGAG
    convs, channel shuffle, an upsampling that keeps depth 1)."""
    decoder, inputs, outputs = loaded
    twin = EMCAD(decoder.channels, spatial_dims=3)
    weights = []
    for w2, w3 in zip(decoder.get_weights(), twin.weights):
        weights.append(_lift_kernel(w2, rng) if len(w3.shape) == 5 else w2)
    twin.set_weights(weights)
    for k, p in enumerate(forward(twin, [x[:, None] for x in inputs])):
        expected = outputs[4 + k]
        assert p.shape == (expected.shape[0], 1, *expected.shape[1:])
        np.testing.assert_allclose(p[:, 0], expected, atol=1e-4, err_msg=f"head {k + 1}")


def test_sl_emcad_forward_shapes(rng):
    """SL-EMCAD's inputs: the lifted axis grows 1 -> 2 -> 4 -> 8 with the in-plane axes."""
    twin = EMCAD(SL_CHANNELS, spatial_dims=3)
    shapes = stage_shapes(SL_CHANNELS, (16, 8, 4, 2), (8, 4, 2, 1))
    outputs = forward(twin, [rng.normal(size=(2, *s)).astype("float32") for s in shapes])
    assert [p.shape for p in outputs] == [(2, *s[:-1], 1) for s in shapes]
    assert outputs[0].shape == (2, 8, 16, 16, 1)
    assert np.isfinite(outputs[0]).all() and outputs[0].std() > 0


def test_sl_emcad_with_static_shapes_equals_the_dynamic_build(rng):
    """Built on static stage shapes (depths 8, 4, 2, 1), the upsampling blocks and the SAB shared by
    every stage meet lifted lengths they were not first built on: same outputs as the dynamic build
    (once the fast paths folded the lifted axis by the build-time length and misread the others)."""
    shapes = stage_shapes(SL_CHANNELS, (16, 8, 4, 2), (8, 4, 2, 1))
    dynamic = EMCAD(SL_CHANNELS, spatial_dims=3)
    static = EMCAD(SL_CHANNELS, spatial_dims=3, input_shapes=shapes)
    static.set_weights(dynamic.get_weights())
    xs = [rng.normal(size=(2, *s)).astype("float32") for s in shapes]
    for a, b in zip(forward(static, xs), forward(dynamic, xs)):
        np.testing.assert_allclose(a, b, atol=1e-5)
