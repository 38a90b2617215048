"""CASCADE decoder: parity with SLDGroup/CASCADE (CASCADE + PVT_CASCADE heads), converter, MACs, rank 3."""

import contextlib
import json

import keras
import numpy as np
import pytest
from reference_fixtures import REFERENCE, assert_close, load_fixture, to_channels_first, to_channels_last

from keras_sl.layers import interpolate
from keras_sl.models.cascade import (
    CASCADE,
    AttentionGate,
    ChannelAttention,
    ConvBlock,
    SpatialAttention,
    UpConv,
    load_cascade_state,
)
from keras_sl.profiler import _graph_macs

FOLDER = REFERENCE / "cascade"
PAPER_CHANNELS = (64, 128, 320, 512)
SL_CHANNELS = (16, 32, 64, 128)


def _numpy(outputs):
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in outputs]


def _trainable_params(model) -> int:
    """thop counts module parameters, not BatchNorm's running statistics."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _table6():
    path = FOLDER / "table6.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared/reference exists on development machines only)")
    return json.loads(path.read_text())


@contextlib.contextmanager
def _shapes_only():
    """On JAX, build models without initializing their weights (counts need shapes only,
    and every weight is assigned before a forward pass): JAX compiles an initializer for
    every weight shape, which dominates these tests. Other backends initialize as usual."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # private API moved: initialize as usual
        global_state = None
    if keras.backend.backend() != "jax" or global_state is None:
        yield
        return
    before = len(global_state.get_global_attribute("uninitialized_variables") or [])
    with keras.StatelessScope(initialize_variables=False):
        yield
    # Forget the variables made here, or the next StatelessScope exit would initialize them.
    pending = global_state.get_global_attribute("uninitialized_variables") or []
    global_state.set_global_attribute("uninitialized_variables", pending[:before])


def _random_weights(model, rng):
    """Fill every weight from NumPy (no initializer runs): small kernels, BatchNorm
    statistics and scales near PyTorch's."""
    for w in model.weights:
        if "variance" in w.path or w.path.endswith("gamma"):
            value = rng.uniform(0.8, 1.2, size=w.shape)
        else:
            value = rng.uniform(-0.2, 0.2, size=w.shape)
        w.assign(value.astype("float32"))


class _CountingState(dict):
    """A state dict that counts how often each key is read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reads = {}

    def __getitem__(self, key):
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().__getitem__(key)


def _maps(rng, channels, sizes, batch=1, data_format="channels_last"):
    """Random inputs, finest first; ``sizes``: spatial shape per stage."""
    maps = []
    for c, size in zip(channels, sizes):
        shape = (batch, *size, c) if data_format == "channels_last" else (batch, c, *size)
        maps.append(rng.normal(size=shape).astype("float32"))
    return maps


def _forward(model, inputs):
    """Outputs (inference mode) as NumPy arrays; on JAX as one compiled function (eager JAX
    compiles every op of the graph on its own, several times slower for one call)."""
    if keras.backend.backend() == "jax":
        import jax

        def run(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        values = [[v.value for v in vs] for vs in (model.trainable_variables, model.non_trainable_variables)]
        outputs = jax.jit(run)(*values, inputs)
    else:
        outputs = model(inputs, training=False)
    return _numpy(outputs if isinstance(outputs, (list, tuple)) else [outputs])


# ---------------------------------------------------------------------------
# Parity with the original (PVT_CASCADE.forward with the encoder replaced by the fixture's maps)
# ---------------------------------------------------------------------------
def _check_original(data_format):
    fixture = load_fixture("cascade")
    channels = tuple(reversed(fixture.config["constructor"]["channels"]))  # deepest first -> finest first
    with _shapes_only():  # every weight comes from the state dict
        decoder = CASCADE(channels=channels, data_format=data_format)
    state = _CountingState(fixture.weights)
    used = load_cascade_state(decoder, state)
    assert used == set(fixture.weights) and set(state.reads.values()) == {1}  # every key used, once

    convert = to_channels_last if data_format == "channels_last" else np.asarray
    back = to_channels_first if data_format == "channels_last" else np.asarray
    inputs = [convert(fixture.inputs[f"in_x{i}"]) for i in (1, 2, 3, 4)]
    features = decoder.stage_features().outputs
    results = _forward(keras.Model(decoder.inputs, decoder.outputs + features), inputs)
    heads, features = results[:4], results[4:]
    for i, d in enumerate(features):
        assert_close(back(d), fixture.outputs[f"out_d{i + 1}"], f"d{i + 1} ({data_format})")
    # outputs finest first = out_head4(d1), ..., out_head1(d4); the original upsamples p_k bilinearly.
    for i, head in enumerate(heads):
        k = 4 - i
        p = interpolate(head, scale_factor=2 ** (6 - k), mode="bilinear", data_format=data_format)
        assert_close(back(_numpy([p])[0]), fixture.outputs[f"out_p{k}"], f"p{k} ({data_format})")


@pytest.mark.reference
def test_matches_original():
    _check_original("channels_last")


@pytest.mark.reference
@pytest.mark.slow
def test_matches_original_channels_first():
    _check_original("channels_first")


def test_converter_reports_missing_and_unused_keys():
    rng = np.random.default_rng(0)
    with _shapes_only():  # the loads below assign every weight
        decoder = CASCADE(channels=(8, 16, 40, 64))
        plain = CASCADE(channels=(8, 16, 40, 64), num_classes=None)
    full = _synthetic_state(decoder, rng)  # the original's key names and shapes
    assert load_cascade_state(decoder, full) == set(full)
    missing = dict(full)
    del missing["decoder.AG2.psi.1.running_var"]
    with pytest.raises(KeyError, match="AG2.psi.1.running_var"):
        load_cascade_state(decoder, missing)
    extra = dict(full, **{"decoder.CA5.fc1.weight": np.zeros((1, 1, 1, 1), "float32")})
    with pytest.raises(ValueError, match="CA5.fc1.weight"):
        load_cascade_state(decoder, extra)
    wrong = dict(full, **{"out_head1.weight": np.zeros((2, 64, 1, 1), "float32")})
    with pytest.raises(ValueError, match="out_head1.weight"):
        load_cascade_state(decoder, wrong)
    # A bare CASCADE state dict (no heads) into a decoder without heads; encoder keys are left alone.
    bare = {k[len("decoder."):]: v for k, v in full.items() if k.startswith("decoder.")}
    assert load_cascade_state(plain, dict(bare), prefix="") == set(bare)
    with_encoder = dict(full, **{"backbone.patch_embed1.proj.weight": np.zeros(3, "float32")})
    assert "backbone.patch_embed1.proj.weight" not in load_cascade_state(decoder, with_encoder)


def _synthetic_state(decoder, rng):
    """Original-style keys for ``decoder`` (fixture-free), from the fixture's key layout rules."""
    c4, c3, c2, c1 = reversed(decoder.channels)  # original order: deepest first
    state = {}

    def conv(key, cout, cin, k, bias=True):
        state[key + ".weight"] = rng.normal(size=(cout, cin) + (k,) * decoder.spatial_dims).astype("float32")
        if bias:
            state[key + ".bias"] = rng.normal(size=cout).astype("float32")

    def bn(key, c):
        for name in ("weight", "bias", "running_mean"):
            state[f"{key}.{name}"] = rng.normal(size=c).astype("float32")
        state[f"{key}.running_var"] = rng.uniform(0.5, 1.5, size=c).astype("float32")

    def block(key, cin, cout):
        conv(f"{key}.conv.0", cout, cin, 3), bn(f"{key}.conv.1", cout)
        conv(f"{key}.conv.3", cout, cout, 3), bn(f"{key}.conv.4", cout)

    def up(key, cin, cout):
        conv(f"{key}.up.1", cout, cin, 3), bn(f"{key}.up.2", cout)

    def gate(key, c, inter):
        for part in ("W_g", "W_x"):
            conv(f"{key}.{part}.0", inter, c, 1), bn(f"{key}.{part}.1", inter)
        conv(f"{key}.psi.0", 1, inter, 1), bn(f"{key}.psi.1", 1)

    def ca(key, c):
        conv(f"{key}.fc1", c // 16, c, 1, bias=False), conv(f"{key}.fc2", c, c // 16, 1, bias=False)

    p = "decoder."
    conv(p + "Conv_1x1", c4, c4, 1)
    block(p + "ConvBlock4", c4, c4)
    up(p + "Up3", c4, c3), gate(p + "AG3", c3, c2), block(p + "ConvBlock3", 2 * c3, c3)
    up(p + "Up2", c3, c2), gate(p + "AG2", c2, c1), block(p + "ConvBlock2", 2 * c2, c2)
    up(p + "Up1", c2, c1), gate(p + "AG1", c1, 32), block(p + "ConvBlock1", 2 * c1, c1)
    ca(p + "CA4", c4), ca(p + "CA3", 2 * c3), ca(p + "CA2", 2 * c2), ca(p + "CA1", 2 * c1)
    conv(p + "SA.conv1", 1, 2, 7, bias=False)
    for k, c in zip((1, 2, 3, 4), (c4, c3, c2, c1)):
        conv(f"out_head{k}", decoder.num_classes, c, 1)
    return state


# ---------------------------------------------------------------------------
# MACs / parameters (thop's rules) at the paper's setting
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("image", [384, 352])
def test_macs_and_params_match_thop(image):
    rows = {(r["image"], "heads" in r["what"]): r for r in _table6()["results"]}
    shapes = [(image // s, image // s, c) for s, c in zip((4, 8, 16, 32), PAPER_CHANNELS)]
    for heads in (False, True):
        with _shapes_only():
            decoder = CASCADE(PAPER_CHANNELS, num_classes=1 if heads else None, input_shapes=shapes)
        row = rows[(image, heads)]
        assert _graph_macs(decoder) == int(row["macs"])  # exact (6.8730 G decoder only at 384)
        assert _trainable_params(decoder) == int(row["params"])  # 10.4219 M decoder only


# ---------------------------------------------------------------------------
# Rank 3 (SL-CASCADE's decoder)
# ---------------------------------------------------------------------------
def test_rank3_forward():
    rng = np.random.default_rng(1)
    with _shapes_only():
        decoder = CASCADE(channels=SL_CHANNELS, spatial_dims=3)
    _random_weights(decoder, rng)
    sizes = [(8, 16, 16), (4, 8, 8), (2, 4, 4), (1, 2, 2)]
    outputs = _forward(decoder, _maps(rng, SL_CHANNELS, sizes, batch=2))
    assert [o.shape for o in outputs] == [(2, *s, 1) for s in sizes]
    assert all(np.isfinite(o).all() for o in outputs)
    sa = decoder.get_layer("SA")  # one module, used at every stage, its weight counted once
    assert len(sa._inbound_nodes) == 4 and tuple(sa.conv.kernel.shape) == (7, 7, 7, 2, 1)
    assert len([w for w in decoder.trainable_weights if w.path.startswith("SA/")]) == 1


def test_rank3_sl_cascade_macs_and_params():
    """SL-CASCADE at 384x384 (in-plane 96/48/24/12, lifted depths 8/4/2/1). The paper's row is
    4.7814 G / 1.6409 M: our decoder alone has 1.6409 M parameters, and 4.7814 G MACs
    once its three nearest upsamplings (thop: 1 per output element) are left out."""
    shapes = [(d, s, s, c) for d, s, c in zip((8, 4, 2, 1), (96, 48, 24, 12), SL_CHANNELS)]
    with _shapes_only():
        decoder = CASCADE(SL_CHANNELS, spatial_dims=3, input_shapes=shapes)
    assert (_graph_macs(decoder), _trainable_params(decoder)) == (4786016576, 1641163)
    with _shapes_only():
        decoder = CASCADE(SL_CHANNELS, spatial_dims=3, num_classes=None, input_shapes=shapes)
    assert (_graph_macs(decoder), _trainable_params(decoder)) == (4784449856, 1640919)
    ups = [decoder.get_layer(f"Up{s}") for s in (1, 2, 3)]  # nearest: 1 per output element
    upsampling = sum(int(np.prod(up.output.shape[1:-1])) * int(up.input[0].shape[-1]) for up in ups)
    assert upsampling == 3096576
    assert round((_graph_macs(decoder) - upsampling) / 1e9, 4) == 4.7814
    assert round(_trainable_params(decoder) / 1e6, 4) == 1.6409


@pytest.mark.slow
def test_rank3_equals_rank2_on_depth_one():
    """With lifted depth 1 everywhere and 3-D kernels zero off their centre slice, the rank-3
    decoder computes the 2-D one: checks pooling, attention and upsampling at rank 3."""
    rng = np.random.default_rng(2)
    channels = (16, 16, 32, 32)
    with _shapes_only():  # every weight is assigned below
        dec2 = CASCADE(channels, num_classes=2)
        dec3 = CASCADE(channels, num_classes=2, spatial_dims=3)
    _random_weights(dec2, rng)
    for w2, w3 in zip(dec2.weights, dec3.weights):
        assert w2.path == w3.path
        value = np.asarray(keras.ops.convert_to_numpy(w2))
        if len(w3.shape) == 5:  # (k, k, k, in, out): the 2-D kernel in the centre slice
            embedded = np.zeros(w3.shape, "float32")
            embedded[w3.shape[0] // 2] = value
            value = embedded
        w3.assign(value)
    maps = _maps(rng, channels, [(16, 16), (8, 8), (4, 4), (2, 2)])
    for y2, y3 in zip(_forward(dec2, maps), _forward(dec3, [m[:, None] for m in maps])):
        np.testing.assert_allclose(y3[:, 0], y2, atol=1e-5)


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------
def test_config_round_trip():
    with _shapes_only():  # configs and structure only
        decoder = CASCADE(channels=SL_CHANNELS, num_classes=3, spatial_dims=3, name="sl_cascade")
        config = decoder.get_config()
        assert config["channels"] == list(SL_CHANNELS) and config["spatial_dims"] == 3
        assert config["num_classes"] == 3 and config["name"] == "sl_cascade"
        clone = CASCADE.from_config(json.loads(json.dumps(config)))  # JSON-friendly, as saved
    assert isinstance(clone, CASCADE) and clone.get_config() == config
    assert [(w.path, w.shape) for w in clone.weights] == [(w.path, w.shape) for w in decoder.weights]
    assert [layer.get_config() for layer in clone.layers] == [layer.get_config() for layer in decoder.layers]
    assert tuple(clone.get_layer("SA").conv.kernel.shape) == (7, 7, 7, 2, 1)
    blocks = {type(layer).__name__: layer for layer in decoder.layers}
    for cls in (CASCADE, ConvBlock, UpConv, AttentionGate, ChannelAttention, SpatialAttention):
        name = keras.saving.get_registered_name(cls)
        assert name == f"keras_sl>{cls.__name__}" and keras.saving.get_registered_object(name) is cls
        if cls is not CASCADE:
            layer_config = blocks[cls.__name__].get_config()
            assert cls.from_config(layer_config).get_config() == layer_config


def test_argument_errors():
    with pytest.raises(ValueError, match="four stages"):
        CASCADE(channels=(16, 32, 64))
    with pytest.raises(ValueError, match="at least 16 channels"):
        CASCADE(channels=(16, 32, 64, 8))  # CA4's 8 // 16 = 0, as the original would fail
    with pytest.raises(ValueError, match="input_shapes"):
        CASCADE(channels=(16, 32, 64, 128), input_shapes=[(8, 8, 16)] * 4)
