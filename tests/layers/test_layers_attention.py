"""SpatialReductionAttention against a PVTv2-style attention written in plain torch."""

import math

import keras
import numpy as np
import pytest
from harness import run_layer_test

from keras_sl.layers import SpatialReductionAttention
from keras_sl.layers.attention import adaptive_average_pool
from keras_sl.layers.torch_weights import torch_conv_kernel, torch_linear_kernel

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class TorchSRA(nn.Module):
    """PVTv2's spatial-reduction attention (sr conv + LayerNorm, or the linear
    variant's pool + 1x1 conv + LayerNorm + GELU) for 1-, 2- and 3-D token maps;
    returns the output and the (unscaled) query, as HSNet's copy does."""

    def __init__(self, dim, heads, ratio, qkv_bias, linear, rank, pool=7):
        super().__init__()
        self.heads, self.ratio, self.linear = heads, ratio, linear
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[rank - 1]
        if linear:
            self.pool = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[rank - 1](pool)
            self.sr = conv(dim, dim, 1)
            self.norm = nn.LayerNorm(dim)
        elif ratio > 1:
            self.sr = conv(dim, dim, ratio, stride=ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, spatial):
        b, n, c = x.shape
        h = self.heads
        q = self.q(x)
        qh = q.reshape(b, n, h, c // h).permute(0, 2, 1, 3)
        if self.linear or self.ratio > 1:
            m = x.permute(0, 2, 1).reshape(b, c, *spatial)
            m = self.sr(self.pool(m)) if self.linear else self.sr(m)
            m = self.norm(m.reshape(b, c, -1).permute(0, 2, 1))
            x = F.gelu(m) if self.linear else m
        k, v = self.kv(x).reshape(b, -1, 2, h, c // h).permute(2, 0, 3, 1, 4)
        attn = ((qh @ k.transpose(-2, -1)) * (c // h) ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)), q


def torch_module(dim, heads, ratio, qkv_bias, linear, rank, pool=3, seed=0):
    torch.manual_seed(seed)
    module = TorchSRA(dim, heads, ratio, qkv_bias, linear, rank, pool).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)  # not the tiny PVT init: attention maps far from uniform
    return module


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


CONFIGS = [  # heads, sr_ratio, qkv_bias, linear
    (2, 1, True, False),
    (2, 2, True, False),
    (1, 4, False, False),
    (2, 0, False, False),  # HSNet's sr_ratio=0: no reduction
    (2, 1, True, True),
]
SPATIAL = {1: (10,), 2: (9, 7), 3: (4, 5, 6)}  # 9 x 7 with sr 2 / 4: PyTorch drops the remainder
CASES = [(2, config) for config in CONFIGS] + [(rank, config) for rank in (1, 3) for config in CONFIGS[1:5:3]]


def random_weights(layer, seed=0):
    """Non-trivial weights without the layer's random initializers (JAX
    compiles a random draw per new shape, seconds on a loaded machine)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(-0.6, 0.6, size=w.shape).astype("float32") for w in layer.get_weights()])


def torch_reference(rank, config, dim=8):
    heads, ratio, bias, linear = config
    module = torch_module(dim, heads, ratio, bias, linear, rank)
    x = torch.randn(2, math.prod(SPATIAL[rank]), dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, q = module(x, SPATIAL[rank])
    layer = SpatialReductionAttention(dim, heads, ratio, bias, linear, pool_size=3, spatial_dims=rank,
                                      return_query=True, data_format="channels_last",
                                      kernel_initializer="zeros")  # loaded below; no random draws
    layer.build()
    assert layer.load_torch_state(module.state_dict()) == set(module.state_dict())
    return layer, x.numpy(), out.numpy(), q.numpy()


def case_id(value):
    return str(value) if isinstance(value, int) else "h{}-sr{}-bias{}-lin{}".format(*value)


@pytest.mark.parametrize("rank, config", CASES, ids=case_id)
def test_matches_torch_on_tokens(rank, config):
    layer, tokens, want, want_q = torch_reference(rank, config)
    out, q = layer(tokens, spatial_shape=SPATIAL[rank])
    np.testing.assert_allclose(np_(out), want, atol=1e-5)
    np.testing.assert_allclose(np_(q), want_q, atol=1e-5)


@pytest.mark.parametrize("rank, config", [(2, CONFIGS[1]), (3, CONFIGS[4])])
def test_map_inputs_in_both_layouts(rank, config):
    """Channels-last and channels-first maps give the token results, in the map's layout."""
    layer, tokens, want, want_q = torch_reference(rank, config)
    spatial, dim = SPATIAL[rank], tokens.shape[-1]
    out, q = layer(tokens.reshape(2, *spatial, dim))
    np.testing.assert_allclose(np_(out).reshape(want.shape), want, atol=1e-5)
    np.testing.assert_allclose(np_(q).reshape(want.shape), want_q, atol=1e-5)
    first = SpatialReductionAttention.from_config({**layer.get_config(), "data_format": "channels_first"})
    first.build()
    first.set_weights(layer.get_weights())
    out, q = first(np.moveaxis(tokens.reshape(2, *spatial, dim), -1, 1))
    np.testing.assert_allclose(np.moveaxis(np_(out), 1, -1).reshape(want.shape), want, atol=1e-5)
    np.testing.assert_allclose(np.moveaxis(np_(q), 1, -1).reshape(want.shape), want_q, atol=1e-5)


def test_adaptive_average_pool_matches_torch():
    x = np.random.default_rng(0).normal(size=(2, 9, 7, 3)).astype("float32")
    for size in ((3, 3), (4, 5), (9, 7), (2, 1)):
        want = F.adaptive_avg_pool2d(torch.from_numpy(np.moveaxis(x, -1, 1)), size).numpy()
        np.testing.assert_allclose(np.moveaxis(np_(adaptive_average_pool(x, size)), -1, 1), want, atol=1e-6)


def tiny_model(shape):
    inputs = keras.Input(shape)
    attention = SpatialReductionAttention(8, num_heads=2, sr_ratio=2, qkv_bias=True, data_format="channels_last",
                                          kernel_initializer="zeros")
    linear = SpatialReductionAttention(8, num_heads=2, linear=True, pool_size=2, data_format="channels_last",
                                       kernel_initializer="zeros")
    model = keras.Model(inputs, linear(attention(inputs)))
    random_weights(model)
    return model


def test_saving_round_trip(tmp_path):
    model = tiny_model((None, None, 8))
    assert tuple(model.output.shape) == (None, None, None, 8)
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 8)).astype("float32")
    path = tmp_path / "attention.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np_(loaded(x)), np_(model(x)), atol=1e-6)
    assert loaded.layers[1].get_config() == model.layers[1].get_config()


def test_unknown_spatial_sizes_in_a_tensorflow_graph():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only TensorFlow traces graphs with unknown spatial sizes")
    import tensorflow as tf

    model = tiny_model((None, None, 8))
    x = np.random.default_rng(0).normal(size=(2, 7, 5, 8)).astype("float32")
    graph = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 8), tf.float32)])
    np.testing.assert_allclose(graph(x).numpy(), np_(model(x)), atol=1e-5)


def test_layer_test_shapes_and_config():
    layer = SpatialReductionAttention(12, num_heads=3, sr_ratio=2, spatial_dims=3, data_format="channels_first",
                                      kernel_initializer=keras.initializers.Constant(0.05))
    run_layer_test(layer, (1, 12, 4, 4, 2), expected_output_shape=(1, 12, 4, 4, 2))
    query = SpatialReductionAttention(4, return_query=True)
    assert query.compute_output_shape((2, 16, 4)) == ((2, 16, 4), (2, 16, 4))
    symbolic = query(keras.Input((16, 4)))
    assert [tuple(t.shape) for t in symbolic] == [(None, 16, 4), (None, 16, 4)]
    assert layer.get_config()["pool_size"] == [7, 7, 7] and layer.get_config()["sr_ratio"] == 2
    assert {w.path.split("/")[-1] for w in layer.weights} == {
        "q_kernel", "kv_kernel", "proj_kernel", "proj_bias", "sr_kernel", "sr_bias", "gamma", "beta"}


def test_macs_follow_thop():
    c, n = 8, 9 * 7
    plain = SpatialReductionAttention(c, sr_ratio=1, data_format="channels_last")
    assert plain.macs((1, 9, 7, c)) == 2 * n * c * c + n * c * 2 * c
    reduced = SpatialReductionAttention(c, sr_ratio=2, data_format="channels_last")
    m = 4 * 3
    assert reduced.macs((1, n, c), spatial_shape=(9, 7)) == 2 * n * c * c + m * c * c * 4 + 4 * m * c + m * c * 2 * c
    with pytest.raises(ValueError, match="spatial_shape"):
        reduced.macs((1, n, c))


def test_errors_and_weight_helpers():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        SpatialReductionAttention(10, num_heads=3)
    with pytest.raises(ValueError, match="spatial_dims"):
        SpatialReductionAttention(8, spatial_dims=4)
    layer = SpatialReductionAttention(8, sr_ratio=2, data_format="channels_last", kernel_initializer="zeros")
    with pytest.raises(ValueError, match="Build"):
        layer.load_torch_state({})
    with pytest.raises(ValueError, match="spatial_shape"):
        layer(np.zeros((1, 16, 8), "float32"))
    with pytest.raises(ValueError, match="channels"):
        layer(np.zeros((1, 4, 4, 6), "float32"))
    state = torch_module(8, 1, 4, False, False, 2).state_dict()
    with pytest.raises(ValueError, match="sr.weight"):  # kernel 4 where the layer has 2
        layer.load_torch_state(state)
    w = torch.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(torch_linear_kernel(w), w.numpy().T)
    conv = torch.arange(24.0).reshape(4, 3, 2)  # Conv1d (out, in, k)
    np.testing.assert_array_equal(torch_conv_kernel(conv), conv.numpy().transpose(2, 1, 0))
