"""PVTv2Backbone: parity with whai362/PVT's PyramidVisionTransformerV2, converter, MACs."""

import json

import keras
import numpy as np
import pytest
from reference_fixtures import REFERENCE, assert_close, load_fixture, to_channels_first, to_channels_last

from keras_sl.models.pvtv2 import (
    PVTV2_VARIANTS,
    PVTv2Backbone,
    PVTv2Block,
    convert_pvtv2_checkpoint,
    pool_tokens,
    load_pvtv2_state,
    pvtv2_state_shapes,
    read_pvtv2_state,
)
from keras_sl.layers.torch_weights import torch_conv_kernel
from keras_sl.profiler import _graph_macs

FOLDER = REFERENCE / "pvtv2"
# The fixture's tiny architecture with two blocks in stage 2 (same weight shapes: JAX compiles
# each initializer shape once per process).
TINY = dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), depths=(1, 2, 1, 1),
            sr_ratios=(8, 4, 2, 1))


def _fixture_kwargs(config):
    c = config["constructor"]
    assert c["qkv_bias"] and not c["linear"] and c["num_stages"] == 4 and "eps=1e-6" in c["norm_layer"]
    return {k: c[k] for k in ("embed_dims", "num_heads", "mlp_ratios", "depths", "sr_ratios")}


def _key_list(variant):
    path = FOLDER / f"pvt_v2_{variant}_keys.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared/reference exists on development machines only)")
    return json.loads(path.read_text())


@pytest.fixture
def cheap_init(monkeypatch):
    """For models whose weights are loaded or set afterwards: initialise with NumPy zeros
    (JAX compiles every random initializer once per weight shape, seconds per model)."""

    def zeros(self, shape, dtype=None, **kwargs):
        return np.zeros(shape, keras.backend.standardize_dtype(dtype or "float32"))

    for cls in (keras.initializers.TruncatedNormal, keras.initializers.VarianceScaling,
                keras.initializers.GlorotUniform, keras.initializers.Zeros, keras.initializers.Ones):
        monkeypatch.setattr(cls, "__call__", zeros)


def _run(encoder, x):
    """The stage maps as NumPy (one compiled call: cheaper than eager ops on JAX)."""
    return encoder.predict(x, verbose=0)


@pytest.mark.reference
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_matches_original_stage_maps_and_pooled(data_format, cheap_init):
    fixture = load_fixture("pvtv2")
    encoder = PVTv2Backbone(**_fixture_kwargs(fixture.config), data_format=data_format)
    assert encoder.count_params() == fixture.config["weights"]["n_params_module"]
    report = load_pvtv2_state(encoder, fixture.weights)
    assert set(report.used) == set(fixture.weights) and report.ignored == ()
    image = fixture.inputs["in_image"]
    nchw = data_format == "channels_first"
    # stages and forward_pooled in one compiled call (cheaper than eager ops on JAX)
    both = keras.Model(encoder.inputs, [*encoder.outputs, encoder.forward_pooled(encoder.inputs[0])])
    *stages, pooled = _run(both, image if nchw else to_channels_last(image))
    for i, stage in enumerate(stages, start=1):
        assert_close(stage if nchw else to_channels_first(stage), fixture.outputs[f"out_stage{i}"], f"stage{i}")
    assert_close(pooled, fixture.outputs["out_pooled"], "forward_pooled")
    mean = keras.ops.convert_to_numpy(pool_tokens(stages[-1], data_format))
    assert_close(mean, fixture.outputs["out_pooled"], "pool_tokens")


@pytest.mark.reference
def test_converts_npz_and_pth_files(tmp_path, cheap_init):
    fixture = load_fixture("pvtv2")
    kwargs = _fixture_kwargs(fixture.config)
    kernel = torch_conv_kernel(fixture.weights["block1.0.attn.sr.weight"])
    encoder = convert_pvtv2_checkpoint(FOLDER / "weights.npz", variant="b0", **kwargs)
    assert len(encoder.conversion_report.used) == len(fixture.weights)
    loaded = encoder.get_layer("block1_0").attn.sr_kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded), kernel)
    torch = pytest.importorskip("torch")
    path = tmp_path / "pvt_v2.pth"
    state = {k: torch.from_numpy(v) for k, v in fixture.weights.items()}
    state["head.weight"], state["head.bias"] = torch.zeros(10, 64), torch.zeros(10)
    torch.save({"model": state}, path)
    encoder = convert_pvtv2_checkpoint(path, variant="b0", **kwargs)
    assert encoder.conversion_report.ignored == ("head.bias", "head.weight")
    gamma = keras.ops.convert_to_numpy(encoder.get_layer("norm4").gamma)
    np.testing.assert_array_equal(gamma, fixture.weights["norm4.weight"])


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_converter_reads_every_official_key(variant, cheap_init):
    listing = _key_list(variant)
    encoder = PVTv2Backbone.from_variant(variant, input_shape=(32, 32, 3))
    official = {e["key"]: tuple(e["shape"]) for e in listing["keys"]}
    encoder_keys = {k: s for k, s in official.items() if not k.startswith("head.")}
    assert pvtv2_state_shapes(encoder) == encoder_keys
    assert list(pvtv2_state_shapes(encoder)) == list(encoder_keys)  # the original's order
    assert encoder.count_params() == listing["param_count"]["encoder_without_head"]
    report = load_pvtv2_state(encoder, {k: np.zeros(s, "float32") for k, s in official.items()})
    assert set(report.used) == set(encoder_keys) and len(report.used) == listing["n_keys_without_head"]
    assert report.ignored == ("head.bias", "head.weight")


def test_converter_errors_name_the_keys(cheap_init):
    encoder = PVTv2Backbone(**TINY)
    state = {k: np.zeros(s, "float32") for k, s in pvtv2_state_shapes(encoder).items()}
    load_pvtv2_state(encoder, state)
    missing = {k: v for k, v in state.items() if k != "block2.1.mlp.fc2.bias"}
    with pytest.raises(ValueError, match=r"missing key\(s\) \['block2.1.mlp.fc2.bias'\]"):
        load_pvtv2_state(encoder, missing)
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['block2.2.norm1.weight'\]"):
        load_pvtv2_state(encoder, {**state, "block2.2.norm1.weight": np.zeros(32, "float32")})
    with pytest.raises(ValueError, match=r"block1.0.attn.sr.weight: \(16, 16, 4, 4\)"):
        load_pvtv2_state(encoder, {**state, "block1.0.attn.sr.weight": np.zeros((16, 16, 4, 4), "float32")})
    assert read_pvtv2_state({"module.norm1.weight": 1})["norm1.weight"] == 1


def test_variants_and_config_round_trip(cheap_init):
    assert set(PVTV2_VARIANTS) >= {"b0", "b1", "b2", "b3", "b4", "b5"}
    with pytest.raises(ValueError, match="Unknown PVTv2 variant"):
        PVTv2Backbone.from_variant("b9")
    encoder = PVTv2Backbone(**TINY, input_shape=(None, None, 2), name="tiny")
    config = encoder.get_config()
    clone = PVTv2Backbone.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    assert [w.path for w in clone.weights] == [w.path for w in encoder.weights]
    assert [w.shape for w in clone.weights] == [w.shape for w in encoder.weights]
    assert encoder.pyramid_strides == (4, 8, 16, 32) and encoder.pyramid_channels == (16, 32, 40, 64)
    # registered for saving (serialize_keras_object itself imports TensorFlow: seconds)
    assert keras.saving.get_registered_object("keras_sl>PVTv2Backbone") is PVTv2Backbone
    assert keras.saving.get_registered_object("keras_sl>PVTv2Block") is PVTv2Block


def test_channels_first_shapes(cheap_init):
    first = PVTv2Backbone(**TINY, input_shape=(3, 40, 72), data_format="channels_first")
    # sizes not multiples of 32 shrink as PyTorch's convolutions (floor((H - 1) / s) + 1)
    assert [tuple(t.shape) for t in first.outputs] == [
        (None, 16, 10, 18), (None, 32, 5, 9), (None, 40, 3, 5), (None, 64, 2, 3)]
    assert first.pyramid_channels == (16, 32, 40, 64) and first.pyramid_levels == ("P2", "P3", "P4", "P5")
    assert tuple(first.forward_pooled(first.inputs[0]).shape) == (None, 64)


def test_linear_variant_builds(cheap_init):
    encoder = PVTv2Backbone(**TINY, linear=True, input_shape=(64, 64, 3))
    shapes = pvtv2_state_shapes(encoder)
    assert shapes["block4.0.attn.sr.weight"] == (64, 64, 1, 1)
    load_pvtv2_state(encoder, {k: np.full(s, 0.01, "float32") for k, s in shapes.items()})
    assert [tuple(t.shape)[1:3] for t in encoder.outputs] == [(16, 16), (8, 8), (4, 4), (2, 2)]


@pytest.mark.reference
def test_macs_and_params_match_thop_table6(cheap_init):
    path = FOLDER / "table6.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    for row in json.loads(path.read_text())["results"]:
        size = row["input"][2]
        encoder = PVTv2Backbone.from_variant("b2", input_shape=(size, size, 3))
        assert encoder.count_params() == row["params"]
        macs = _graph_macs(encoder)
        assert abs(macs - row["macs"]) <= 0.005 * row["macs"], (size, macs, row["macs"])
