"""Test-time augmentation by flips: what is averaged, and that it changes nothing where it should not."""

import numpy as np
import pytest
from window_toys import images, lifted, plain

import keras_sl
from keras_sl.inference import flip_views, with_flips
from keras_sl.pqa import quality


def _flip(x, view):  # x: (B, H, W, C) or (B, m, H, W, C); view: spatial axes 0 (H) / 1 (W)
    first = x.ndim - 3
    return np.flip(x, axis=[first + a for a in view]) if view else x


def test_views_and_the_average_of_a_non_equivariant_predictor():
    assert flip_views(None, 2) == [()]
    assert flip_views("flips", 2) == [(), (1,), (0,), (0, 1)]
    assert flip_views("flips", 1) == [(), (0,)] and len(flip_views("flips", 3)) == 8
    with pytest.raises(ValueError, match="tta must be None or 'flips'"):
        flip_views("rotations", 2)
    x = images(2, 5, 6, seed=0)

    def shift(b):  # moves rows down, scales channels: not flip equivariant
        return np.roll(b, 1, axis=1) * np.arange(1, 4, dtype="float32")

    got = with_flips(shift, flip_views("flips", 2))(x)
    want = np.mean([_flip(shift(_flip(x, v)), v) for v in flip_views("flips", 2)], axis=0)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.abs(got - shift(x)).max() > 1e-2
    assert with_flips(shift, [()]) is shift


def test_tta_changes_nothing_for_flip_equivariant_models():
    """Pointwise networks commute with flips: TTA gives the prediction, Q, the depth uncertainty and the
    per-window Q of no TTA, with and without windows; SL and 2-D models."""
    x = images(2, 13, 18, seed=1)
    sl = lifted()
    p, q = sl.predict_quality(x, verbose=0)
    tp, tq = sl.predict_quality(x, tta="flips")
    np.testing.assert_allclose(tp, p, atol=1e-6)
    np.testing.assert_allclose(tq, q, atol=1e-6)
    wp, wq, grid = sl.predict_quality(x, window=8, window_quality=True)
    twp, twq, tgrid = sl.predict_quality(x, window=8, window_quality=True, tta="flips")
    for a, b in ((twp, wp), (twq, wq), (tgrid, grid)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    depth = lifted(depth=True)
    for a, b in zip(depth.predict_uncertainty(x, tta="flips"), depth.predict_uncertainty(x, verbose=0)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    flat = plain(classes=3)
    np.testing.assert_allclose(flat.predict(x, tta="flips"), flat.predict(x, verbose=0), atol=1e-6)


def test_tta_averages_the_per_slice_logits_of_the_views_before_the_head():
    """The exact definition on an SL-UNet (not flip equivariant): the slices are the mean of each view's
    un-flipped slices, the prediction is sigmoid(sum of the selected averaged slices), Q is eq. 11 on the
    averaged slices. Image sizes are multiples of the stride, so no padding is involved."""
    model = keras_sl.SLUNet(levels=2, lift_depth=4, num_selected=2)
    x = images(2, 12, 16, seed=2)
    views = flip_views("flips", 2)
    per_view = [_flip(model.predict_slices(_flip(x, v), verbose=0), v) for v in views]
    averaged = np.mean(per_view, axis=0)
    np.testing.assert_allclose(model.predict_slices(x, tta="flips"), averaged, atol=1e-5)
    probs, q = model.predict_quality(x, tta="flips")
    selected = model.selected_slices
    logits = averaged[:, selected].sum(axis=1)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-5)
    np.testing.assert_allclose(q, np.asarray(quality(averaged, selected)), atol=1e-6)
    np.testing.assert_allclose(model.predict(x, tta="flips"), probs, atol=1e-5)
    plain_probs = model.predict(x, verbose=0)
    assert np.abs(probs - plain_probs).max() > 1e-4  # the views do differ for this network

    # a constant image: every view sees the same input, so the TTA output is symmetric under flips
    const = np.full((1, 12, 16, 3), 0.3, "float32")
    sym, _ = model.predict_quality(const, tta="flips")
    np.testing.assert_allclose(sym, sym[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(sym, sym[:, :, ::-1], atol=1e-6)
    # with windows: each window is flipped (one window here = the whole image)
    np.testing.assert_allclose(model.predict(x, tta="flips", window=(12, 16)), probs, atol=1e-5)


def test_tta_of_a_plain_segmenter_averages_logits_then_activates():
    model = plain(kernel=3, classes=2)
    x = images(1, 9, 11, seed=3)
    logits = model.predict_logits(x, tta="flips")
    want = np.mean([_flip(model.predict_logits(_flip(x, v), verbose=0), v) for v in flip_views("flips", 2)], axis=0)
    np.testing.assert_allclose(logits, want, atol=1e-5)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(model.predict(x, tta="flips"), e / e.sum(axis=-1, keepdims=True), atol=1e-6)
    with pytest.raises(ValueError, match="tta must be None or 'flips'"):
        model.predict(x, tta="flip")
    assert model.predict([], tta="flips") == []


def test_evaluation_passes_window_and_tta_through():
    """keras_sl.evaluation (what `keras-sl evaluate/predict` call) follows the preprocessor by default and
    takes window / tta overrides; models without those arguments get none."""
    from types import SimpleNamespace

    from keras_sl.evaluation import evaluate_segmentation, predict_image, predict_images, prediction_options
    from keras_sl.evaluation_depth import evaluate_depth

    model = lifted(kernel=3, preprocessor=keras_sl.ImagePreprocessor(inference="window", window_size=8))
    x = images(2, 13, 18, seed=4)
    probs, qs = predict_images(model, list(x))
    want, q_want = model.predict_quality(list(x), window=8)
    np.testing.assert_allclose(np.stack(probs), np.stack(want), atol=0)
    np.testing.assert_allclose(qs, q_want, atol=0)
    one, q_one = predict_image(model, x[0], window=False, tta="flips")
    ref, q_ref = model.predict_quality(x[:1], window=False, tta="flips")
    np.testing.assert_allclose(one, ref[0], atol=1e-6)
    assert q_one == pytest.approx(float(q_ref[0]), abs=1e-6)

    masks = [(x[i, ..., :1] > 0).astype("float32") for i in range(2)]
    dataset = SimpleNamespace(load=lambda s: (x[s.index], masks[s.index]))
    samples = [SimpleNamespace(id=str(i), index=i) for i in range(2)]
    calls = []

    class Recorder:  # a model without window/tta arguments: evaluate must not pass them
        def predict_quality(self, images, batch_size=None, verbose=0):
            calls.append(len(images))
            return model.predict_quality(images, window=False)

    assert evaluate_segmentation(Recorder(), dataset, samples)["n"] == 2 and calls == [2]
    by_window = evaluate_segmentation(model, dataset, samples, tta="flips")
    assert [r["q"] for r in by_window["per_image"]] == pytest.approx(
        list(model.predict_quality(list(x), tta="flips")[1]), abs=1e-6)
    assert prediction_options(window=(8, 8)) == {"window": (8, 8)}
    from argparse import Namespace

    from keras_sl.cli_errors import EXIT_USAGE, CLIError
    from keras_sl.evaluation import cli_prediction_options

    assert cli_prediction_options(Namespace(window="resize", tta=None)) == {"window": False}
    with pytest.raises(CLIError, match="--window takes") as error:
        cli_prediction_options(Namespace(window="8x", tta=None))
    assert error.value.exit_code == EXIT_USAGE

    depth = lifted(depth=True)
    targets = [np.full((13, 18, 1), 2.0, "float32")] * 2
    depth_data = SimpleNamespace(load=lambda s: (x[s.index], targets[s.index]))
    result = evaluate_depth(depth, depth_data, samples, window=8, tta="flips")
    plain_result = evaluate_depth(depth, depth_data, samples)
    assert result["rmse"] == pytest.approx(plain_result["rmse"], abs=1e-5)  # pointwise: windows and flips commute
