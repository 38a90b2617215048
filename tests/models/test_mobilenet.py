"""MobileNet v1 encoder (FastDepth's): architecture, thop counts, the converter, presets,
and parity of its skip taps with dwofk/fast-depth's ``MobileNetSkipAdd`` (../shared/reference/fastdepth)."""

import json

import keras
import numpy as np
import pytest
from harness import forward_numpy, shapes_only
from keras import ops
from reference_fixtures import (
    ATOL,
    REFERENCE,
    assert_close,
    load_fixture,
    to_channels_first,
    to_channels_last,
)

from keras_sl.models.mobilenet import (
    FASTDEPTH_LEVELS,
    MOBILENET_V1_LAYERS,
    MobileNetV1Backbone,
    layer_channels,
    level_layers,
    load_mobilenet_v1_state,
    mobilenet_v1_state_shapes,
)
from keras_sl.profiler import count_macs, trainable_params

# thop 0.1.1 on MobileNetSkipAdd at 224x224 (table6.json): full model minus decoder.
ENCODER_MACS = 766_363_136 - 178_476_032
ENCODER_PARAMS = 3_960_930 - 753_954


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def forward(model, x) -> list:
    """The pyramid levels as a list of NumPy arrays (see ``harness.forward_numpy``)."""
    return list(forward_numpy(model, x))





def test_architecture():
    assert level_layers() == {"P1": 1, "P2": 3, "P3": 5, "P4": 11, "P5": 13}
    assert [s for _, s in MOBILENET_V1_LAYERS] == [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert layer_channels() == (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
    encoder = MobileNetV1Backbone(width_multiplier=0.25, input_shape=(64, 96, 3), kernel_initializer="zeros")
    assert encoder.pyramid_levels == ("P1", "P2", "P3", "P4", "P5")
    assert encoder.pyramid_strides == (2, 4, 8, 16, 32) and encoder.stride_multiple == (32, 32)
    assert [tuple(t.shape) for t in encoder.outputs] == [
        (None, 32, 48, 16), (None, 16, 24, 32), (None, 8, 12, 64), (None, 4, 6, 128), (None, 2, 3, 256)]
    # ReLU6 in the encoder, no bias anywhere, the taps are the layers' last ReLU6
    assert encoder.get_layer("conv7_pw_relu").max_value == 6.0
    assert not any("bias" in w.path for w in encoder.weights)
    assert encoder.layer_output(5) is encoder.pyramid_outputs["P3"]
    assert encoder.get_layer("conv2_dw").strides == (2, 2) and encoder.get_layer("conv2_dw").groups == 16
    picked = MobileNetV1Backbone(width_multiplier=0.25, levels=("P5", "P1"), kernel_initializer="zeros")
    assert picked.pyramid_levels == ("P1", "P5") and picked.pyramid_channels == (16, 256)
    with pytest.raises(ValueError, match="levels"):
        MobileNetV1Backbone(levels=("P6",))
    with pytest.raises(ValueError, match="width_multiplier"):
        MobileNetV1Backbone(width_multiplier=0)


def test_channels_first_and_other_input_channels():
    encoder = MobileNetV1Backbone(width_multiplier=0.25, levels=FASTDEPTH_LEVELS, input_shape=(1, 32, 64),
                                  data_format="channels_first", kernel_initializer="zeros")
    assert encoder.pyramid_channels == (16, 32, 64, 256)
    assert [tuple(t.shape) for t in encoder.outputs][-1] == (None, 256, 1, 2)
    assert mobilenet_v1_state_shapes(encoder)["conv0.0.weight"] == (8, 1, 3, 3)


def test_counts_match_thop():
    """The encoder's share of thop's MobileNetSkipAdd figures at 224x224 (table6.json: full model minus
    decoder), exactly: convolutions, batch norms (4 per element), ReLU6 0."""
    with shapes_only():
        encoder = MobileNetV1Backbone(levels=FASTDEPTH_LEVELS, input_shape=(224, 224, 3))
    assert count_macs(encoder, (1, 224, 224, 3)) == ENCODER_MACS
    assert trainable_params(encoder) == ENCODER_PARAMS
    table = REFERENCE / "fastdepth" / "table6.json"
    if table.is_file():
        full, decoder = json.loads(table.read_text())["results"]
        assert (full["macs"] - decoder["macs"], full["params"] - decoder["params"]) == (ENCODER_MACS, ENCODER_PARAMS)


def _state(encoder, rng, layer_key="conv{}."):
    return {k: rng.normal(size=s).astype("float32") if not k.endswith("running_var")
            else rng.uniform(0.5, 2.0, size=s).astype("float32")
            for k, s in mobilenet_v1_state_shapes(encoder, layer_key=layer_key).items()}


def test_converter_keys_and_errors(rng):
    encoder = MobileNetV1Backbone(width_multiplier=0.25, kernel_initializer="zeros")
    state = _state(encoder, rng)
    assert len(state) == 5 + 13 * 10
    used = load_mobilenet_v1_state(encoder, {**state, "decode_conv1.0.0.weight": np.zeros(1)})
    assert used == set(state)  # keys outside the 14 layers are not the encoder's business
    np.testing.assert_array_equal(np_(encoder.get_layer("conv3_dw").kernel),
                                  np.transpose(state["conv3.0.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(np_(encoder.get_layer("conv13_pw_bn").moving_variance),
                                  state["conv13.4.running_var"])
    # PyTorch's num_batches_tracked buffers are accepted
    assert "conv0.1.num_batches_tracked" in load_mobilenet_v1_state(
        encoder, {**state, "conv0.1.num_batches_tracked": np.array(3)})
    # the ImageNet MobileNet's names (model.{i}.*), its classifier ignored
    imagenet = {k.replace("conv", "model.", 1): v for k, v in state.items()}
    imagenet["fc.weight"] = np.zeros((1000, 256), "float32")
    assert len(load_mobilenet_v1_state(encoder, imagenet, layer_key="model.{}.")) == len(state)
    missing = {k: v for k, v in state.items() if k != "conv7.3.weight"}
    with pytest.raises(ValueError, match=r"1 missing key\(s\) \['conv7.3.weight'\]"):
        load_mobilenet_v1_state(encoder, missing)
    with pytest.raises(ValueError, match="conv7.9.weight"):
        load_mobilenet_v1_state(encoder, {**state, "conv7.9.weight": np.zeros(1)})
    with pytest.raises(ValueError, match=r"conv0.0.weight: \(8, 4, 3, 3\)"):
        load_mobilenet_v1_state(encoder, {**state, "conv0.0.weight": np.zeros((8, 4, 3, 3), "float32")})
    with pytest.raises(TypeError, match="MobileNetV1Backbone"):
        load_mobilenet_v1_state(keras.Sequential(), state)


def test_config_round_trip_and_preset(tmp_path):
    encoder = MobileNetV1Backbone(width_multiplier=0.25, levels=("P1", "P2", "P3", "P5"), input_shape=(32, 32, 3))
    config = encoder.get_config()
    json.dumps(config)
    assert config["kernel_initializer"] is None and config["levels"] == ["P1", "P2", "P3", "P5"]
    clone = MobileNetV1Backbone.from_config(config)
    assert clone.get_config() == config
    assert [w.shape for w in clone.weights] == [w.shape for w in encoder.weights]
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(encoder))
    assert type(revived) is MobileNetV1Backbone and revived.get_config() == config
    encoder.save_to_preset(tmp_path / "mobilenet")
    loaded = MobileNetV1Backbone.from_preset(tmp_path / "mobilenet")
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    for a, b in zip(forward(loaded, x), forward(encoder, x)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # the original initialisation: N(0, sqrt(2 / (k * k * out)))
    big = MobileNetV1Backbone(levels=("P1",), input_shape=(32, 32, 3))
    kernel = np_(big.get_layer("conv1_pw").kernel)
    assert abs(kernel.std() - np.sqrt(2.0 / 64)) < 0.02


@pytest.mark.reference
def test_skip_taps_match_reference():
    """``conv5`` (enc_x3) within 1e-4. ``conv13`` (enc_out) is within the fixture's own float32
    round-off: it lies 1.1e-4 from the float64 value of the same network (see test_fastdepth.py)."""
    fixture = load_fixture("fastdepth")
    encoder = MobileNetV1Backbone(levels=FASTDEPTH_LEVELS, kernel_initializer="zeros")
    used = load_mobilenet_v1_state(encoder, fixture.weights)
    assert used == {k for k in fixture.weights if not k.startswith("decode_conv")}
    _, _, enc_x3, enc_out = forward(encoder, to_channels_last(fixture.inputs["in_image"]))
    assert_close(to_channels_first(enc_x3), fixture.outputs["out_enc_x3"], "enc_x3", atol=ATOL)
    assert_close(to_channels_first(enc_out), fixture.outputs["out_enc_out"], "enc_out", atol=5e-4)
