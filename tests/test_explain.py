"""keras_sl.explain: per-slice saliency, Grad-CAM and guided backpropagation
(paper Fig. 2) on the current backend, checked against finite differences,
receptive fields, hand computations on linear toys and numbers stored from
the same weights (the same on every backend); and the figure."""

import keras
import numpy as np
import pytest

import keras_sl
from keras_sl import explain as E
from keras_sl.layers.prelu import PReLU

H, W = 16, 12


def _tiny_sl(depth: bool = False):
    """The SLSegmenter docstring's tiny SL-UNet with weights set from fixed seeds (the same on every backend)."""
    net = keras_sl.UNet(3, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1, input_shape=(4, None, None, 3))
    cls = keras_sl.SLDepthEstimator if depth else keras_sl.SLSegmenter
    model = cls(net, lift_depth=4, num_selected=2)
    for i, v in enumerate(model.trainable_weights):
        rng = np.random.default_rng(100 + i)
        shape = tuple(v.shape)
        if len(shape) >= 2:
            value = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            value = rng.uniform(0.05, 0.3, size=shape)
        v.assign(value.astype("float32"))
    return model


@pytest.fixture(scope="module")
def tiny():
    return _tiny_sl()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(7).random((H, W, 3)).astype("float32")


def _set(layer, *values):
    layer.set_weights([np.asarray(v, "float32") for v in values])


def _toy_sl(layers, depth: int = 4):
    """An SLSegmenter around a plain Keras network at rank 3 (MONAI's lifted layout)."""
    inputs = keras.Input((depth, None, None, 3))
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras_sl.SLSegmenter(keras.Model(inputs, x), lift_depth=depth, num_selected=2)


def _toy_2d(layers):
    inputs = keras.Input((None, None, 3))
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras_sl.Segmenter(keras.Model(inputs, x))


def _logits(model, x):
    return keras.ops.convert_to_numpy(model(keras.ops.convert_to_tensor(x[None]), training=False))[0]


# -- shapes and metadata --------------------------------------------------------------------------------------------
def test_maps_have_one_plane_per_slice_at_the_image_size(tiny, image):
    result = E.explain(tiny, image, methods=E.METHODS)
    for name in E.METHODS:
        maps = result[name]
        assert maps.shape == (4, H, W) and maps.dtype == np.float32, name
        assert np.isfinite(maps).all() and (maps >= 0).all() and maps.max() > 0, name
    assert result["selected_slices"] == tiny.selected_slices == [1, 2]
    assert result["lift_depth"] == 4 and result["target_class"] == 0 and result["task"] == "segmentation"
    assert result["layer"] == E.default_layer(tiny, image.shape) == "up0" and result["gradcam_slices"] == [0, 1, 2, 3]
    assert result["prediction"].shape == (H, W, 1) and 0 <= result["quality"] <= 1
    assert result["region"].shape == (H, W) and result["region"].dtype == bool
    assert result["region_kind"] in ("foreground", "all (no foreground predicted)")
    if result["region_kind"] == "foreground":  # the region is the model's own prediction (eq. 10)
        np.testing.assert_array_equal(result["region"], result["prediction"][..., 0] > 0.5)
    assert result["scores"].shape == (4,)
    # The slices differ (the lifted axis is padded at both ends), so do their maps.
    assert not np.allclose(result["saliency"][0], result["saliency"][1])


def test_resized_and_padded_images_come_back_at_their_size(tiny):
    """A preprocessor that resizes, and a size that needs padding: maps at the input's size."""
    odd = np.random.default_rng(1).integers(0, 255, (15, 11, 3)).astype("uint8")
    result = E.explain(tiny, odd, methods="saliency", region="foreground")  # padded to 16 x 12, cropped back
    assert result["saliency"].shape == (4, 15, 11) and np.isfinite(result["saliency"]).all()
    # The padding is never part of the region: the scores are means over the image's own pixels.
    slices = tiny.predict_slices(odd[None], verbose=0)[0, ..., 0]
    assert result["region_kind"] == "foreground" and 0 < result["region"].sum() < 15 * 11
    np.testing.assert_allclose(result["scores"], slices[:, result["region"]].mean(axis=1), rtol=1e-4, atol=1e-6)
    previous = tiny.preprocessor
    tiny.preprocessor = keras_sl.ImagePreprocessor(image_size=(H, W))
    try:
        result = E.explain(tiny, odd[:9, :7], methods=("saliency", "gradcam"))
    finally:
        tiny.preprocessor = previous
    assert result["saliency"].shape == result["gradcam"].shape == (4, 9, 7)
    assert result["region"].shape == (9, 7) and result["prediction"].shape == (9, 7, 1)


def test_a_downsampled_layer_maps_slices_to_its_lifted_positions(tiny, image):
    result = E.explain(tiny, image, methods="gradcam", layer="down0")  # lifted length 2 of 4
    assert result["gradcam_slices"] == [0, 0, 1, 1] and result["gradcam"].shape == (4, H, W)
    nested = E.explain(tiny, image, methods="gradcam", layer="down0/unit0")
    assert nested["layer"] == "down0/unit0" and nested["gradcam_slices"] == [0, 0, 1, 1]
    # The top unit runs as one fused convolution: its sub-unit never runs, which is said.
    with pytest.raises(ValueError, match="did not run"):
        E.explain(tiny, image, methods="gradcam", layer="up0_res/unit0")


def test_depth_models_explain_the_mean_depth(image):
    model = _tiny_sl(depth=True)
    result = E.explain(model, image, methods=("saliency", "gradcam"))
    assert result["task"] == "regression" and result["region_kind"] == "all" and result["region"].all()
    assert result["saliency"].shape == (4, H, W) and result["prediction"].shape == (H, W, 1)
    np.testing.assert_allclose(result["scores"], _logits(model, image)[..., 0].mean(axis=(1, 2)), rtol=1e-5)


# -- the gradients are right ------------------------------------------------------------------------------------------
def test_saliency_equals_finite_differences(tiny, image):
    region = np.zeros((H, W), bool)
    region[4:7, 4:7] = True
    result = E.explain(tiny, image, methods="saliency", region=region)
    np.testing.assert_array_equal(result["region"], region)
    assert result["region_kind"] == "mask"

    def scores(x):  # every slice's score: the mean of its logit over the region
        return _logits(tiny, x)[..., 0][:, region].astype("float64").mean(axis=1)

    step = 1e-3
    checked = 0
    for r, c in ((5, 5), (3, 7), (12, 2)):
        diffs = []
        for ch in range(3):
            up, down = image.copy(), image.copy()
            up[r, c, ch] += step
            down[r, c, ch] -= step
            diffs.append((scores(up) - scores(down)) / (2 * step))
        expected = np.abs(np.stack(diffs)).max(axis=0)  # max over colours, per slice
        got = result["saliency"][:, r, c]
        np.testing.assert_allclose(got, expected, rtol=3e-2, atol=2e-4, err_msg=f"pixel {(r, c)}")
        checked += int((expected > 1e-3).sum())
    assert checked >= 8  # most of the 12 checked gradients are far from 0


def test_pixels_outside_the_receptive_field_have_zero_saliency():
    """Two 3x3x3 convolutions (no norm: instance norm would see every pixel) read
    two pixels around each output: a 2 x 2 region in the corner cannot see row or column 4 on."""
    model = _toy_sl([keras.layers.Conv3D(4, 3, padding="same", name="c1"), keras.layers.ReLU(name="relu"),
                     keras.layers.Conv3D(1, 3, padding="same", name="c2")])
    img = np.random.default_rng(3).random((10, 10, 3)).astype("float32")
    region = np.zeros((10, 10), bool)
    region[:2, :2] = True
    result = E.explain(model, img, methods=("saliency", "guided_backprop"), region=region)
    for name in ("saliency", "guided_backprop"):
        maps = result[name]
        assert (maps[:, 4:, :] == 0).all() and (maps[:, :, 4:] == 0).all(), name
        assert (maps[:, :4, :4] > 0).mean() > 0.5, name


def _lifted_features(x, kernel, bias, depth):
    """A (3, 1, 1) 'same' convolution of the lifted image (zero padding along the lifted axis), in NumPy."""
    out = []
    for z in range(depth):
        taps = [t for t in range(3) if 0 <= z + t - 1 < depth]
        out.append(sum(x @ kernel[t, 0, 0] for t in taps) + bias)
    return np.stack(out)  # (m, H, W, C)


def test_gradcam_and_saliency_of_a_linear_sl_toy_match_a_hand_computation():
    rng = np.random.default_rng(11)
    features = keras.layers.Conv3D(3, (3, 1, 1), padding="same", name="features")
    head = keras.layers.Conv3D(1, 1, name="head")
    model = _toy_sl([features, head])
    kernel, bias = rng.normal(size=(3, 1, 1, 3, 3)), rng.normal(size=3) + 1
    v, b = np.array([1.0, -0.5, 2.0]).reshape(1, 1, 1, 3, 1), rng.normal(size=1)
    _set(features, kernel, bias)
    _set(head, v, b)
    img = rng.random((6, 8, 3)).astype("float32")
    result = E.explain(model, img, methods=("saliency", "gradcam"), layer="features", region="all")
    assert result["layer"] == "features" and result["gradcam_slices"] == [0, 1, 2, 3]

    pixels = 6 * 8
    a = _lifted_features(img.astype("float64"), kernel, bias, 4)
    weights = v[0, 0, 0, :, 0]
    # score_z = mean_p sum_c v_c A_zc(p) + b: d score_z / d A_zc = v_c / P everywhere, so alpha_c = v_c / P.
    expected_cam = np.maximum((a * (weights / pixels)).sum(-1), 0)
    np.testing.assert_allclose(result["gradcam"], expected_cam, rtol=1e-4, atol=1e-7)
    # d score_z / d x_i = (1/P) sum_c v_c sum_{taps t inside the lifted axis} K[t, i, c], at every pixel.
    for z in range(4):
        taps = [t for t in range(3) if 0 <= z + t - 1 < 4]
        grad = sum(kernel[t, 0, 0] for t in taps) @ weights / pixels
        np.testing.assert_allclose(result["saliency"][z], np.full((6, 8), np.abs(grad).max()), rtol=1e-4)
    assert (result["gradcam"] > 0).mean() > 0.3
    assert not np.allclose(result["gradcam"][0], result["gradcam"][1])  # the padded end slices differ


def test_gradcam_of_a_linear_2d_twin_matches_a_hand_computation():
    """The 2-D twin is one 'slice'; its feature map has no lifted axis."""
    rng = np.random.default_rng(12)
    features, head = keras.layers.Conv2D(4, 1, name="features"), keras.layers.Conv2D(1, 1, name="head")
    model = _toy_2d([features, head])
    kernel, bias, v, b = rng.normal(size=(1, 1, 3, 4)), rng.normal(size=4), rng.normal(size=(1, 1, 4, 1)), [0.5]
    _set(features, kernel, bias)
    _set(head, v, b)
    img = rng.random((5, 7, 3)).astype("float32")
    result = E.explain(model, img, methods="gradcam", layer="features", region="all")
    assert result["gradcam"].shape == (1, 5, 7) and result["gradcam_slices"] is None
    assert result["selected_slices"] == [0] and result["lift_depth"] == 1 and result["quality"] is None
    a = img.astype("float64") @ kernel[0, 0] + bias
    np.testing.assert_allclose(result["gradcam"][0], np.maximum(a @ (v[0, 0, :, 0] / 35), 0), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("rectifier", ["keras_relu", "keras_activation_relu6", "conv_activation", "keras_sl_prelu"])
def test_guided_backprop_follows_the_guided_rule(rectifier):
    """x -> 1x1 conv -> rectifier -> 1x1 conv: the guided gradient at pixel p is
    sum_c W_ic max(v_c / P, 0) f'(h_c(p)), its map the max over colours of its size."""
    rng = np.random.default_rng(5)
    first = keras.layers.Conv2D(4, 1, name="first", activation="relu" if rectifier == "conv_activation" else None)
    last = keras.layers.Conv2D(1, 1, name="last")
    act = {"keras_relu": keras.layers.ReLU(name="act"), "keras_activation_relu6": keras.layers.Activation("relu6"),
           "conv_activation": None, "keras_sl_prelu": PReLU(alpha_initializer=0.3, name="act")}[rectifier]
    model = _toy_2d([first, last] if act is None else [first, act, last])
    kernel, bias = rng.normal(size=(1, 1, 3, 4)), rng.normal(size=4) * 0.3
    v = np.array([1.0, -2.0, 0.5, 3.0]).reshape(1, 1, 4, 1)
    _set(first, kernel, bias)
    _set(last, v, [0.1])
    img = rng.random((6, 6, 3)).astype("float32") - 0.5  # |h| < 6: relu6 is relu here
    from keras_sl.fast import dispatch

    with dispatch.recording() as used:
        result = E.explain(model, img, methods=("saliency", "guided_backprop"), region="all")
    h = img.astype("float64") @ kernel[0, 0] + bias
    assert np.abs(h).max() < 6
    slope = 0.3 if rectifier == "keras_sl_prelu" else 0.0
    local = np.where(h > 0, 1.0, slope)
    up = v[0, 0, :, 0] / 36
    guided = (np.maximum(up, 0) * local) @ kernel[0, 0].T
    plain = (up * local) @ kernel[0, 0].T
    np.testing.assert_allclose(result["guided_backprop"][0], np.abs(guided).max(-1), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(result["saliency"][0], np.abs(plain).max(-1), rtol=1e-4, atol=1e-8)
    assert not np.allclose(result["guided_backprop"], result["saliency"])
    if rectifier == "keras_sl_prelu":
        assert ("prelu", "guided_backprop") in used
    assert "guided_backprop" not in [p.name for p in dispatch.paths("prelu")]  # registered for the call only
    # The layers are as they were.
    assert "call" not in getattr(act, "__dict__", {}) and "call" not in first.__dict__
    assert first.activation is (keras.activations.relu if rectifier == "conv_activation" else keras.activations.linear)


def test_guided_backprop_reaches_prelu_fused_into_instance_norm(tiny, image):
    from keras_sl.fast import dispatch

    with dispatch.recording() as used:
        result = E.explain(tiny, image, methods="guided_backprop")
    assert ("instance_norm", "reference") in used and ("prelu", "guided_backprop") in used
    plain = E.explain(tiny, image, methods="saliency")["saliency"]
    assert not np.allclose(result["guided_backprop"], plain)


# -- the same numbers on every backend --------------------------------------------------------------------------------
# Stored from this file's weights and image (JAX, TensorFlow and PyTorch agreed to ~1e-6):
# per-slice sums of each map, and four pixels of slice 2.
REFERENCE = {
    "saliency": ([1.632569, 1.926549, 2.263938, 1.683378], [0.005836772, 0.01796899, 0.01300185, 0.01393542]),
    "gradcam": ([0.3707519, 0.3380651, 0.1310237, 0.3161647], [0.0, 0.002825632, 0.002159228, 0.004050425]),
    "guided_backprop": ([0.6800333, 1.119757, 0.9705603, 1.139374],
                        [0.001845819, 0.003261954, 0.01019533, 0.01415174]),
}
PIXELS = ((0, 0), (3, 4), (7, 6), (11, 5))


def test_maps_agree_with_numbers_stored_from_the_other_backends(tiny, image):
    result = E.explain(tiny, image, methods=E.METHODS)
    for name, (sums, pixels) in REFERENCE.items():
        maps = result[name]
        np.testing.assert_allclose(maps.sum(axis=(1, 2)), sums, rtol=2e-4, err_msg=name)
        np.testing.assert_allclose([maps[2][p] for p in PIXELS], pixels, rtol=2e-3, atol=1e-6, err_msg=name)


# -- errors --------------------------------------------------------------------------------------------------
def test_bad_arguments_are_clear(tiny, image):
    with pytest.raises(ValueError, match="Unknown explanation method"):
        E.explain(tiny, image, methods=("saliency", "lrp"))
    with pytest.raises(ValueError, match="No layer 'nope'.*up0"):
        E.explain(tiny, image, methods="gradcam", layer="nope")
    with pytest.raises(ValueError, match="3 layers are named 'unit0'; give a path such as 'down0/unit0'"):
        E.explain(tiny, image, methods="gradcam", layer="unit0")
    with pytest.raises(ValueError, match="batch"):
        E.explain(tiny, image[None])
    with pytest.raises(ValueError, match="3-channel"):
        E.explain(tiny, image[..., :2])
    with pytest.raises(ValueError, match="target_class"):
        E.explain(tiny, image, target_class=1)
    with pytest.raises(ValueError, match="region mask"):
        E.explain(tiny, image, region=np.ones((3, 3), bool))
    with pytest.raises(TypeError, match="keras_sl task"):
        E.explain(tiny.backbone, image)
    assert E.find_layer(tiny, "up0_res/unit0") == "up0_res/unit0"
    assert E.layer_paths(tiny) == ["down0", "bottom", "skip0", "up0", "up0_res"]


def test_guided_backprop_refuses_layers_with_inline_rectifiers(image):
    class InlineReLU(keras.layers.Layer):  # its rectifier is not a layer or op keras_sl can override
        def call(self, x):
            return keras.ops.relu(x)

    model = _toy_sl([keras.layers.Conv3D(2, 1), InlineReLU(name="inline"), keras.layers.Conv3D(1, 1)])
    reason = E.guided_backprop_unsupported(model)
    assert reason and "inline" in reason and "InlineReLU" in reason
    with pytest.raises(NotImplementedError, match="InlineReLU"):
        E.explain(model, image, methods="guided_backprop")
    assert E.explain(model, image, methods="saliency")["saliency"].shape == (4, H, W)


# -- the figure ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["pillow", "matplotlib"])
def test_figure(tiny, image, tmp_path, engine):
    if engine == "matplotlib":
        pytest.importorskip("matplotlib")
    from PIL import Image

    from keras_sl.visualize_explain import save_explanation_figure

    result = E.explain(tiny, image, methods=E.METHODS)
    path = save_explanation_figure(tmp_path / "fig.png", image, result, title="tiny", engine=engine)
    with Image.open(path) as im:
        assert im.size[0] > 4 * W and im.size[1] > 4 * H
