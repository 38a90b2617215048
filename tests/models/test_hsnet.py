"""HSNet decoder + heads: parity with baiboat/HSNet, converter, MACs/params, config, rank 3."""

import json

import keras
import numpy as np
import pytest
from reference_fixtures import REFERENCE, assert_close, load_fixture, to_channels_first, to_channels_last

from keras_sl.models.hsnet import HSNET_CHANNELS, HSNetDecoder, load_hsnet_state
from keras_sl.profiler import _graph_macs

TINY = (8, 16, 24, 32)


def run(model, inputs) -> list:
    """Outputs as NumPy; JAX runs the graph as one compiled function (eager JAX compiles op by op)."""
    if keras.backend.backend() == "jax":
        outputs = model.predict(inputs, batch_size=len(inputs[0]), verbose=0)
    else:
        outputs = model(inputs)
    return [np.asarray(keras.ops.convert_to_numpy(y)) for y in outputs]


def tiny_maps(rng, size=16, spatial_dims=2, channels=TINY):
    return [rng.normal(size=(2, *(size // 2**i,) * spatial_dims, c)).astype("float32") for i, c in enumerate(channels)]


@pytest.fixture(scope="module")
def decoder():
    """One full-width decoder for the tests that need HSNet's real widths."""
    return HSNetDecoder()


def _trainable_params(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.reference
def test_matches_original_hsnet(decoder):
    fixture = load_fixture("hsnet")
    used = load_hsnet_state(decoder, fixture.weights)
    assert used == {k for k in fixture.weights if not k.startswith("decoder.hb0.")}
    probe = keras.Model(
        decoder.inputs,
        [*decoder.stage_features, decoder.coefficients]
        + [decoder.get_layer(f"pred{i}_up").output for i in range(1, 5)]
        + decoder.outputs,
    )
    inputs = [to_channels_last(fixture.inputs[f"in_x{i}"]) for i in range(1, 5)]
    outs = run(probe, inputs)
    names = ["dec1", "dec2", "dec3", "dec4", "coeff", "pred1", "pred2", "pred3", "pred4"]
    for name, out in zip(names, outs):
        expected = fixture.outputs[f"out_{name}"]
        actual = out if out.ndim == 2 else to_channels_first(out)
        assert_close(actual, expected, name)
        if name.startswith("pred"):  # small values: also ~1e-3 of their scale
            assert_close(actual, expected, name + " (relative)", atol=1e-3 * np.abs(expected).max())
    prediction, stage_logits = outs[9], outs[10:]
    fused = sum(fixture.outputs[f"out_pred{i}"] for i in range(1, 5))
    assert_close(to_channels_first(prediction), fused, "P1 + P2 + P3 + P4")
    assert [y.shape for y in stage_logits] == [(2, 16, 16, 1), (2, 8, 8, 1), (2, 4, 4, 1), (2, 2, 2, 1)]


@pytest.mark.reference
def test_converter_checks_keys(decoder):
    weights = load_fixture("hsnet").weights
    unused = {k: v for k, v in weights.items() if k.startswith("decoder.hb0.")}
    assert len(unused) == 11
    kept = {k: v for k, v in weights.items() if k not in unused}
    assert len(load_hsnet_state(decoder, kept)) == len(kept)  # hb0 may be absent
    with pytest.raises(KeyError, match="hs1.block.attn.kv.weight"):
        load_hsnet_state(decoder, {k: v for k, v in kept.items() if k != "decoder.hs1.block.attn.kv.weight"})
    with pytest.raises(ValueError, match="decoder.hb4.conv.weight"):
        load_hsnet_state(decoder, {**kept, "decoder.hb4.conv.weight": np.zeros(1, "float32")})
    with pytest.raises(ValueError, match="backbone.patch_embed1.proj.weight"):
        load_hsnet_state(decoder, {**kept, "backbone.patch_embed1.proj.weight": np.zeros(1, "float32")})
    load_hsnet_state(decoder, {**kept, "backbone.x": np.zeros(1, "float32")}, skip_prefixes=("backbone.",))


def test_macs_and_params_at_paper_setting(decoder):
    """Table VI: decoder + heads on PVTv2-b2 maps of a 384 x 384 image (thop 0.1.1)."""
    shapes = [(384 // s, 384 // s, c) for s, c in zip((4, 8, 16, 32), HSNET_CHANNELS)]
    fixed = HSNetDecoder(input_shapes=shapes)
    macs, params = _graph_macs(fixed), _trainable_params(fixed)
    table = REFERENCE / "hsnet" / "table6.json"
    if table.is_file():
        row = next(r for r in json.loads(table.read_text())["results"] if r["image"] == 384 and "heads" in r["what"])
        expected_macs, expected_params = row["macs"], row["params"]
    else:
        expected_macs, expected_params = 1565250624, 4407154
    assert (macs, params) == (expected_macs, expected_params)
    # thop counts only parameters of modules that run (the unused decoder.hb0 is not built here);
    # Keras also counts the BatchNorm moving statistics as (non-trainable) parameters.
    assert _trainable_params(decoder) == params


def test_config_round_trip(decoder):
    assert decoder.get_config()["channels"] == list(HSNET_CHANNELS)
    model = HSNetDecoder(TINY, mlp_ratio=2.0, gate_channels=16, num_classes=3, data_format="channels_last",
                         name="hs_tiny")
    config = model.get_config()
    clone = HSNetDecoder.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config and clone.name == "hs_tiny"
    assert clone.count_params() == model.count_params()
    assert clone.torch_paths == model.torch_paths
    assert keras.saving.get_registered_object("keras_sl>HSNetDecoder") is HSNetDecoder


def test_two_stages_channels_first_and_rank_3(rng):
    """Every layer kind in both data formats, and the decoder built on volumes (2 stages keep JAX compiles short)."""
    channels = (8, 16)
    maps = tiny_maps(rng, size=8, channels=channels)
    last = HSNetDecoder(channels, num_classes=2, data_format="channels_last")
    outs = run(last, maps)
    assert [y.shape for y in outs] == [(2, 32, 32, 2), (2, 8, 8, 2), (2, 4, 4, 2)]
    first = HSNetDecoder(channels, num_classes=2, data_format="channels_first")
    first.set_weights(last.get_weights())
    for a, b in zip(outs, run(first, [to_channels_first(m) for m in maps])):
        assert_close(to_channels_first(a), b, "channels_first")
    volume = HSNetDecoder(channels, spatial_dims=3)
    outs3 = run(volume, tiny_maps(rng, size=4, spatial_dims=3, channels=channels))
    assert [y.shape for y in outs3] == [(2, 16, 16, 16, 1), (2, 4, 4, 4, 1), (2, 2, 2, 2, 1)]
    assert all(np.isfinite(y).all() for y in outs3)


def test_validation():
    with pytest.raises(ValueError, match="even"):
        HSNetDecoder((8, 15, 24, 32))
    with pytest.raises(ValueError, match="input_shapes"):
        HSNetDecoder(TINY, input_shapes=[(16, 16, 8)] * 3)
