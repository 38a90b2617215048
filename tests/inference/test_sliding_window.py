"""Sliding-window inference: geometry, blending, and the tasks' window mode (2-D, SL, depth)."""

import itertools

import keras
import numpy as np
import pytest
from window_toys import images, interior_mask, lifted, plain

import keras_sl
from keras_sl.depth_quality import slice_statistics_np
from keras_sl.inference import WindowSpec, blend_weights, sliding_window_inference, window_grid, window_starts
from keras_sl.inference.sliding_window import MIN_WEIGHT


# -- geometry and blending (NumPy only) ------------------------------------------------------
@pytest.mark.parametrize("size,window,overlap", [(100, 32, 0.25), (45, 16, 0.5), (32, 32, 0.5), (33, 32, 0.0),
                                                 (7, 4, 0.9), (20, 32, 0.25)])
def test_windows_cover_the_axis_and_the_last_ends_at_the_border(size, window, overlap):
    starts = window_starts(size, window, overlap)
    padded = max(size, window)
    assert starts[0] == 0 and starts[-1] + window == padded
    assert starts == sorted(set(starts))
    steps = np.diff(starts)
    assert (steps[:-1] == max(1, int(window * (1 - overlap)))).all() if len(steps) > 1 else True
    covered = np.zeros(padded, bool)
    for s in starts:
        covered[s:s + window] = True
    assert covered.all()


def test_gaussian_weights_are_monai_like():
    w = blend_weights((9, 6), "gaussian", sigma=0.125)
    assert w.shape == (9, 6) and w.max() == 1.0 and w.min() >= MIN_WEIGHT
    np.testing.assert_array_equal(w, w[::-1, ::-1])  # centred
    assert w[4, 2] == w[4, 3] == w.max() and w[0, 0] == MIN_WEIGHT  # floored far from the centre
    # separable: exp(-d^2 / (2 (0.125 n)^2)) per axis
    d = np.arange(6) - 2.5
    g = np.exp(-0.5 * (d / 0.75) ** 2)
    np.testing.assert_allclose(w[4], np.maximum(g / g.max(), MIN_WEIGHT))
    np.testing.assert_array_equal(blend_weights((3, 4)), np.ones((3, 4)))


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_blend_is_the_weighted_mean_of_the_windows(blend):
    """Each window predicts its own index: the output is sum_j w_j c_j / sum_j w_j, with the weights of
    blend_weights placed at window_grid's positions."""
    x = np.zeros((1, 23, 19, 1), "float32")
    counter = itertools.count()

    def predictor(windows):
        return np.stack([np.full(w.shape, next(counter), "float32") for w in windows])

    out = sliding_window_inference(x, predictor, (8, 8), overlap=0.5, blend=blend, batch_size=3, dtype="float64")
    starts, grid = window_grid((23, 19), (8, 8), 0.5)
    weights = blend_weights((8, 8), blend)
    num, den = np.zeros((23, 19)), np.zeros((23, 19))
    # calls always hold 3 windows (the last filled up with copies), so window k is the k-th predicted
    for k, (r, c) in enumerate(itertools.product(*starts)):
        num[r:r + 8, c:c + 8] += weights * k
        den[r:r + 8, c:c + 8] += weights
    assert grid == (5, 4) and next(counter) == 21  # 20 windows in 7 calls of 3
    np.testing.assert_allclose(out[0, ..., 0], num / den, rtol=1e-12)


def test_windows_are_batched_and_memory_is_bounded():
    x = np.ones((2, 40, 40, 2), "float32")
    sizes = []

    def predictor(windows):
        sizes.append(len(windows))
        return windows[..., :1] * 2

    out, means = sliding_window_inference(x, lambda w: (predictor(w), w.mean(axis=(1, 2, 3))), 16, overlap=0.25,
                                          batch_size=4)
    n = int(np.prod(window_grid((40, 40), (16, 16), 0.25)[1]))  # 3 x 3 windows
    assert n == 9 and sizes == [4] * (2 * 3)  # 9 windows -> 3 calls per image, the last one filled up
    assert out.shape == (2, 40, 40, 1) and np.allclose(out, 2) and means.shape == (2, 3, 3)


def test_shorter_axes_are_padded_and_cropped_back_and_channels_first():
    x = images(1, 10, 50, seed=1)
    out = sliding_window_inference(x, lambda w: w[..., ::-1] * 3, (16, 16), overlap=0.5, blend="gaussian")
    np.testing.assert_allclose(out, x[..., ::-1] * 3, rtol=1e-6, atol=1e-6)
    xc = np.moveaxis(x, -1, 1)
    # (n, C, H, W) -> (n, K, m, H, W): a lead (slice) axis after the channels
    outc = sliding_window_inference(xc, lambda w: np.stack([w, -w], axis=2), 16, data_format="channels_first",
                                    lead_axes=1)
    assert outc.shape == (1, 3, 2, 10, 50)
    np.testing.assert_allclose(outc[:, :, 1], -xc, rtol=1e-6, atol=1e-6)


def test_bad_geometry_and_outputs_raise_with_the_fix():
    x = np.zeros((1, 20, 20, 1), "float32")
    with pytest.raises(ValueError, match=r"overlap must be a fraction in \[0, 1\)"):
        sliding_window_inference(x, lambda w: w, 8, overlap=1.0)
    with pytest.raises(ValueError, match="blend must be one of"):
        sliding_window_inference(x, lambda w: w, 8, blend="linear")
    with pytest.raises(ValueError, match="positive int"):
        sliding_window_inference(x, lambda w: w, 0)
    with pytest.raises(ValueError, match="2 spatial axes"):
        sliding_window_inference(x, lambda w: w, (8, 8, 8))
    with pytest.raises(ValueError, match="dense outputs at the input's resolution"):
        sliding_window_inference(x, lambda w: w[:, ::2, ::2], 8)
    with pytest.raises(ValueError, match="sigma must be a positive"):
        WindowSpec(8, blend="gaussian", sigma=0.0)


def test_command_line_window_values():
    from keras_sl.inference import parse_window_option

    assert [parse_window_option(t) for t in ("auto", "Resize", "window", "64", "64x96")] == [None, False, True, 64,
                                                                                          (64, 96)]
    for bad in ("", "0", "64x", "big", "-8"):
        with pytest.raises(ValueError, match="--window takes auto, resize, window, N or HxW"):
            parse_window_option(bad)


# -- tasks --------------------------------------------------------------------------------------
def test_one_window_over_the_image_equals_a_single_pass_sl_unet():
    """An SL-UNet (stride multiple 2) predicted with one window that covers the image exactly: the
    same prediction and Q as the single pass (its fast selected-slice-sum graph included)."""
    model = keras_sl.SLUNet(levels=2, lift_depth=4, num_selected=2)
    x = images(2, 16, 20, seed=3)
    probs, q = model.predict_quality(x, verbose=0)
    wprobs, wq, per_window = model.predict_quality(x, window=(16, 20), window_quality=True)
    np.testing.assert_allclose(wprobs, probs, atol=2e-6)
    np.testing.assert_allclose(wq, q, atol=1e-6)
    np.testing.assert_allclose(per_window[:, 0, 0], q, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, window=(16, 20)), model.predict(x, verbose=0), atol=2e-6)
    # sizes that are no multiple of the stride, and an image smaller than the window
    odd, q_odd, grid_q = model.predict_quality(images(1, 45, 37, seed=4), window=16, window_quality=True)
    assert odd.shape == (1, 45, 37, 1) and np.isfinite(odd).all() and np.isfinite(q_odd).all()
    assert grid_q.shape == (1, *window_grid((45, 37), (16, 16), 0.25)[1]) == (1, 4, 3)
    small = model.predict(images(1, 9, 7, seed=5), window=(16, 20))
    assert small.shape == (1, 9, 7, 1) and np.isfinite(small).all()
    with pytest.raises(ValueError, match=r"not a multiple of .*stride multiple \(2, 2\); use e.g. window=\(16, 16\)"):
        model.predict(x, window=15)
    with pytest.raises(ValueError, match=r"not a multiple"):  # refused when the preprocessor is set, too
        model.preprocessor = keras_sl.ImagePreprocessor(inference="window", window_size=(16, 15))
    assert model.preprocessor.inference == "resize"


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_overlapping_windows_equal_a_single_pass_for_a_pointwise_sl_net(blend):
    """A network that is pointwise in space: every window computes the same slice logits as the single
    pass, so the blended slices, the prediction and Q (on the whole image) are those of the single pass,
    for any size (45 x 37: not a multiple of the step) and for an image smaller than the window."""
    model = lifted()
    model.preprocessor = keras_sl.ImagePreprocessor(window_overlap=0.5, window_blend=blend)
    mixed = [images(1, 45, 37, seed=6)[0], images(1, 9, 20, seed=7)[0]]
    probs, q = model.predict_quality(mixed, verbose=0)
    wprobs, wq, per_window = model.predict_quality(mixed, window=16, window_quality=True, window_batch_size=3)
    for a, b in zip(wprobs, probs):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(wq, q, atol=1e-6)
    assert isinstance(per_window, list) and [g.shape for g in per_window] == [(5, 4), (1, 2)]
    # each window's Q is the Q of the single pass on that window's crop
    starts, _ = window_grid((45, 37), (16, 16), 0.5)
    crops = [mixed[0][r:r + 16, c:c + 16] for r, c in itertools.product(*starts)]
    _, q_crops = model.predict_quality(np.stack(crops), verbose=0)
    np.testing.assert_allclose(per_window[0].reshape(-1), q_crops, atol=1e-6)
    np.testing.assert_allclose(model.predict_slices(mixed[:1], window=16)[0], model.predict_slices(mixed[:1],
                               verbose=0)[0], atol=1e-5)


def test_windows_equal_a_single_pass_inside_the_windows_for_a_3x3_net():
    """A 3 x 3 convolution sees zero padding at each window's edge: the blend equals the single pass
    wherever no window has an edge inside the image, and not everywhere else."""
    model = plain(kernel=3)
    x = images(1, 29, 40, seed=8)
    spec = keras_sl.inference.WindowSpec(12, overlap=0.5)
    full = model.predict_logits(x, verbose=0)
    tiled = model.predict_logits(x, window=spec)
    good = np.logical_and.outer(interior_mask(29, 12, 0.5), interior_mask(40, 12, 0.5))
    np.testing.assert_allclose(tiled[0][good], full[0][good], atol=1e-5)
    assert np.abs(tiled[0][~good] - full[0][~good]).max() > 1e-3
    # predict applies the activation (softmax, K = 2) to the blended logits
    np.testing.assert_allclose(model.predict(x, window=spec), keras.ops.convert_to_numpy(
        keras.ops.softmax(tiled, axis=-1)), atol=1e-6)


def test_the_preprocessor_decides_and_predict_overrides():
    pre = keras_sl.ImagePreprocessor(image_size=(16, 16), scale=0.5, inference="window", window_overlap=0.5)
    model = lifted(preprocessor=pre)
    x = images(1, 40, 33, seed=9)
    by_window = model.predict(x)  # normalised (scale), not resized: windows of image_size
    np.testing.assert_allclose(by_window, model.predict(x, window=(16, 16)), atol=0)
    unresized = model.predict(x * 0.5, preprocess=False, window=False)  # pointwise net: windows change nothing
    np.testing.assert_allclose(by_window, unresized, atol=1e-6)
    resized = model.predict(x, window=False)  # through the 16 x 16 network input, resized back
    assert resized.shape == by_window.shape and np.abs(resized - by_window).max() > 1e-3
    with pytest.raises(ValueError, match="window_quality=True gives one Q per window"):
        model.predict_quality(x, window=False, window_quality=True)
    with pytest.raises(ValueError, match="need raw NumPy images"):
        model.predict(keras.ops.convert_to_tensor(x), window=True)
    empty, q_empty, w_empty = model.predict_quality(x[:0], window_quality=True)
    assert empty.shape == (0, 40, 33, 1) and q_empty.shape == (0,) and len(w_empty) == 0


def test_preprocessor_window_options_round_trip_and_old_configs_load():
    pre = keras_sl.ImagePreprocessor(scale=1 / 255, inference="window", window_size=(64, 48), window_overlap=0.5,
                                     window_blend="gaussian", window_sigma=0.2)
    config = pre.get_config()
    assert config["inference"] == "window" and config["window_size"] == [64, 48]
    assert config["window_blend"] == "gaussian" and config["window_overlap"] == 0.5 and config["window_sigma"] == 0.2
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pre))
    assert clone == pre and clone.window_spec() == WindowSpec((64, 48), 0.5, "gaussian", 0.2)
    old = {k: v for k, v in config.items() if not k.startswith(("inference", "window"))}
    legacy = keras_sl.ImagePreprocessor.from_config(old)
    assert legacy.inference == "resize" and legacy.window_spec() is None
    assert "window" not in repr(legacy) and "window_blend='gaussian'" in repr(pre)
    assert keras_sl.ImagePreprocessor(window_size=32).get_config()["window_size"] == 32
    # a task's config carries it (and a task built from that config gets it back)
    model = lifted(preprocessor=pre)
    assert keras.saving.deserialize_keras_object(model.get_config()["preprocessor"]) == pre
    with pytest.raises(ValueError, match="inference='window' needs a window"):
        keras_sl.ImagePreprocessor(inference="window")
    with pytest.raises(ValueError, match="inference must be one of"):
        keras_sl.ImagePreprocessor(inference="tiles")
    with pytest.raises(ValueError, match="overlap must be a fraction"):
        keras_sl.ImagePreprocessor(window_overlap=-0.1)
    with pytest.raises(ValueError, match="window must be None, True, False"):
        pre.window_spec("big")
    with pytest.raises(ValueError, match="window=True needs"):
        keras_sl.ImagePreprocessor().window_spec(True)


def test_depth_models_blend_slices_then_compute_uncertainty_and_q():
    """SL depth: the uncertainty and Q in window mode come from the whole image's blended slices
    (a 3x3x3 network, so the blend differs from the single pass)."""
    model = lifted(kernel=3, depth=True, lift_depth=4, num_selected=2)
    x = images(1, 30, 26, seed=10)
    window = WindowSpec(16, overlap=0.5, blend="gaussian")
    depth, uncertainty, q, per_window = model.predict_uncertainty(x, window=window, window_quality=True)
    slices = model.predict_slices(x, window=window)
    mean, spread, q_ref = slice_statistics_np(slices, model.selected_slices)
    np.testing.assert_allclose(depth, mean, atol=1e-5)
    np.testing.assert_allclose(uncertainty, spread, atol=1e-5)
    np.testing.assert_allclose(q, q_ref, atol=1e-5)
    assert per_window.shape == (1, 3, 3) and np.isfinite(per_window).all()
    d2, q2 = model.predict_quality(x, window=window)
    np.testing.assert_array_equal(d2, depth)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_allclose(model.predict(x, window=window), depth, atol=1e-5)
    # a pointwise depth net: windows equal the single pass; the 2-D DepthEstimator too
    point = lifted(depth=True)
    for got, want in zip(point.predict_uncertainty(x, window=8), point.predict_uncertainty(x, verbose=0)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    flat = plain(classes=1, depth=True)
    np.testing.assert_allclose(flat.predict(x, window=(8, 8)), flat.predict(x, verbose=0), atol=1e-6)
