"""BatchNorm / LayerNorm against torch.nn.BatchNormNd / nn.LayerNorm, on every backend."""

import keras
import numpy as np
import pytest
from harness import run_layer_test

from keras_sl.layers import BatchNorm, LayerNorm

torch = pytest.importorskip("torch")
nn = torch.nn

TORCH_BN = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
SHAPES = {0: (), 1: (7,), 2: (5, 4), 3: (3, 4, 2)}


def to_layout(x_ncl, data_format):
    return x_ncl if data_format == "channels_first" else np.moveaxis(x_ncl, 1, -1)


def from_layout(y, data_format):
    return y if data_format == "channels_first" else np.moveaxis(y, -1, 1)


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_batch_norm_matches_torch_in_training_and_inference(rank, data_format):
    """Three training steps (batch statistics, unbiased running variance,
    momentum 0.1), then inference with the running statistics."""
    rng = np.random.default_rng(rank)
    channels = 3
    torch_bn = TORCH_BN[rank](channels)
    with torch.no_grad():
        torch_bn.weight.uniform_(0.5, 1.5)
        torch_bn.bias.uniform_(-0.5, 0.5)
        torch_bn.running_mean.uniform_(-0.2, 0.2)
        torch_bn.running_var.uniform_(0.5, 1.5)
    bn = BatchNorm(data_format=data_format)
    bn.build(to_layout(np.zeros((2, channels) + SHAPES[rank]), data_format).shape)
    assert bn.load_torch_state(torch_bn.state_dict()) == set(torch_bn.state_dict())
    torch_bn.train()
    for step in range(3):
        x = (rng.normal(size=(4, channels) + SHAPES[rank]) * 2 + 1.5).astype("float32")
        want = torch_bn(torch.from_numpy(x)).detach().numpy()
        got = from_layout(np_(bn(to_layout(x, data_format), training=True)), data_format)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"training step {step}")
    np.testing.assert_allclose(np_(bn.moving_mean), torch_bn.running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(np_(bn.moving_variance), torch_bn.running_var.numpy(), atol=1e-6)
    torch_bn.eval()
    x = rng.normal(size=(2, channels) + SHAPES[rank]).astype("float32")
    want = torch_bn(torch.from_numpy(x)).detach().numpy()
    got = from_layout(np_(bn(to_layout(x, data_format))), data_format)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_batch_norm_without_affine_and_frozen_layer():
    x = np.random.default_rng(0).normal(size=(6, 5, 2)).astype("float32")
    torch_bn = nn.BatchNorm1d(2, affine=False, eps=1e-3, momentum=0.3)
    bn = BatchNorm(epsilon=1e-3, momentum=0.7, affine=False, data_format="channels_last")
    want = torch_bn(torch.from_numpy(np.moveaxis(x, -1, 1))).detach().numpy()
    np.testing.assert_allclose(np.moveaxis(np_(bn(x, training=True)), -1, 1), want, atol=1e-5)
    np.testing.assert_allclose(np_(bn.moving_variance), torch_bn.running_var.numpy(), atol=1e-6)
    assert len(bn.trainable_weights) == 0 and len(bn.non_trainable_weights) == 2
    # trainable=False runs in inference mode, statistics untouched (Keras' convention)
    bn.trainable = False
    before = np_(bn.moving_mean)
    torch_bn.eval()
    want = torch_bn(torch.from_numpy(np.moveaxis(x, -1, 1))).detach().numpy()
    np.testing.assert_allclose(np.moveaxis(np_(bn(x, training=True)), -1, 1), want, atol=1e-5)
    np.testing.assert_array_equal(np_(bn.moving_mean), before)


@pytest.mark.parametrize("epsilon", [1e-5, 1e-6])
def test_layer_norm_on_tokens_matches_torch(epsilon):
    rng = np.random.default_rng(1)
    torch_ln = nn.LayerNorm(16, eps=epsilon)
    with torch.no_grad():
        torch_ln.weight.uniform_(0.5, 1.5)
        torch_ln.bias.uniform_(-0.5, 0.5)
    ln = LayerNorm(epsilon=epsilon, data_format="channels_last")
    ln.build((None, None, 16))
    assert ln.load_torch_state(torch_ln.state_dict(), "") == {"weight", "bias"}
    x = (rng.normal(size=(2, 9, 16)) * 3 + 20).astype("float32")  # a large mean: two-pass variance
    want = torch_ln(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np_(ln(x)), want, atol=1e-5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_layer_norm_over_the_channels_of_a_map(rank, data_format):
    rng = np.random.default_rng(rank)
    torch_ln = nn.LayerNorm(5)
    with torch.no_grad():
        torch_ln.weight.uniform_(0.5, 1.5)
        torch_ln.bias.uniform_(-0.5, 0.5)
    x = rng.normal(size=(2, 5) + SHAPES[rank]).astype("float32")
    want = np.moveaxis(torch_ln(torch.from_numpy(np.moveaxis(x, 1, -1))).detach().numpy(), -1, 1)
    ln = LayerNorm(data_format=data_format)
    ln.build(to_layout(x, data_format).shape)
    ln.load_torch_state(torch_ln.state_dict())
    np.testing.assert_allclose(from_layout(np_(ln(to_layout(x, data_format))), data_format), want, atol=1e-5)


def test_defaults_are_pytorch_defaults():
    assert BatchNorm().epsilon == 1e-5 and BatchNorm().momentum == 0.9 and LayerNorm().epsilon == 1e-5
    assert LayerNorm(affine=False).load_torch_state({}) == set()


def test_config_saving_and_shapes(tmp_path):
    bn = BatchNorm(epsilon=1e-3, data_format="channels_first")
    run_layer_test(bn, (2, 3, 4, 4), expected_output_shape=(2, 3, 4, 4))
    ln = LayerNorm(epsilon=1e-6, affine=False, data_format="channels_last")
    run_layer_test(ln, (2, 5, 8))
    assert bn.get_config()["epsilon"] == 1e-3 and ln.get_config()["affine"] is False

    inputs = keras.Input((6, 6, 4))
    outputs = LayerNorm(data_format="channels_last")(BatchNorm(data_format="channels_last")(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 4)).astype("float32")
    model.layers[1](x, training=True)  # moving statistics away from their initial values
    model.layers[2].gamma.assign(np.linspace(0.5, 1.5, 4))
    path = tmp_path / "norms.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np_(loaded(x)), np_(model(x)), atol=1e-6)
    np.testing.assert_allclose(np_(loaded.layers[1].moving_variance), np_(model.layers[1].moving_variance))


def test_mixed_precision_keeps_the_input_dtype():
    x = keras.ops.cast(np.random.default_rng(0).normal(size=(4, 3, 3, 2)), "bfloat16")
    for layer in (BatchNorm(data_format="channels_last", dtype="mixed_bfloat16"),
                  LayerNorm(data_format="channels_last", dtype="mixed_bfloat16")):
        y = layer(x, training=True) if isinstance(layer, BatchNorm) else layer(x)
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"


def test_torch_state_errors():
    bn = BatchNorm(data_format="channels_last")
    bn.build((None, 4))
    with pytest.raises(KeyError, match="running_var"):
        bn.load_torch_state({"weight": np.ones(4), "bias": np.zeros(4), "running_mean": np.zeros(4)})
    with pytest.raises(ValueError, match="shape"):
        bn.load_torch_state({k: np.ones(5) for k in ("weight", "bias", "running_mean", "running_var")})
    state = nn.BatchNorm1d(4).state_dict()
    assert "num_batches_tracked" in bn.load_torch_state(state)
    assert bn.macs((1, 8, 4), (1, 8, 4)) == 4 * 32


def test_fit_step_updates_moving_statistics_and_trains():
    """One compiled training step (JAX: stateless, the moving statistics come
    back as updated state) through BatchNorm, Upsample, attention and LayerNorm."""
    from keras_sl.layers import SpatialReductionAttention, Upsample

    rng = np.random.default_rng(0)
    x = rng.normal(loc=2.0, size=(4, 4, 4, 8)).astype("float32")
    y = rng.normal(size=(4, 8, 8, 8)).astype("float32")
    inputs = keras.Input((4, 4, 8))
    h = BatchNorm(data_format="channels_last")(inputs)
    h = Upsample(scale_factor=2, mode="bilinear", data_format="channels_last")(h)
    h = SpatialReductionAttention(8, num_heads=2, sr_ratio=2, data_format="channels_last",
                                  kernel_initializer="zeros")(h)
    model = keras.Model(inputs, LayerNorm(data_format="channels_last")(h))
    # random kernels without JAX's per-shape random compile; norms stay at 1 / 0
    for layer in model.layers[3:4]:
        layer.set_weights([rng.uniform(-0.5, 0.5, size=w.shape).astype("float32") for w in layer.get_weights()])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np_(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    bn = model.layers[1]
    np.testing.assert_allclose(np_(bn.moving_mean), 0.1 * x.mean(axis=(0, 1, 2)), atol=1e-5)
    unbiased = x.reshape(-1, 8).var(axis=0, ddof=1)
    np.testing.assert_allclose(np_(bn.moving_variance), 0.9 + 0.1 * unbiased, atol=1e-5)
    changed = [not np.allclose(a, np_(w)) for a, w in zip(before, model.trainable_weights)]
    assert all(changed), [w.path for w, c in zip(model.trainable_weights, changed) if not c]
