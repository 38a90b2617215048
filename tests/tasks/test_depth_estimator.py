"""Depth tasks: SLDepthEstimator / DepthEstimator on tiny UNets (predict, uncertainty, Q, saving, training)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_sl
from keras_sl.callbacks import SliceSelection
from keras_sl.depth_quality import quality as depth_quality
from keras_sl.layers.slice_head import SliceHead
from keras_sl.losses import MaskedDepthLoss, SliceSupervision
from keras_sl.pqa import quality as dice_quality
from keras_sl.tasks.depth_estimator import DepthEstimator, SLDepthEstimator

SIZE = 32  # the preprocessor's network size


def _pre():
    return keras_sl.ImagePreprocessor(image_size=(SIZE, SIZE), scale=1 / 255, mean=[0.4] * 3, std=[0.2] * 3)


def _sl(preprocessor="default", **kwargs):
    keras.utils.set_random_seed(1)
    net = keras_sl.UNet(3, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1, input_shape=(4, None, None, 3))
    pre = _pre() if preprocessor == "default" else preprocessor
    return SLDepthEstimator(net, lift_depth=4, num_selected=2, preprocessor=pre, **kwargs)


def _flat(preprocessor="default"):
    keras.utils.set_random_seed(1)
    net = keras_sl.UNet(2, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1)
    return DepthEstimator(net, preprocessor=_pre() if preprocessor == "default" else preprocessor)


def _raw(n, h=SIZE, w=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype="uint8")


def _depth_targets(n, seed=0):
    """Depths in [1, 3] m with a block of invalid (0) pixels per image."""
    y = np.random.default_rng(seed).uniform(1.0, 3.0, (n, SIZE, SIZE, 1)).astype("float32")
    y[:, :6] = 0.0
    y[:, :, -3:] = 0.0
    return y


def _masked_l1_mse(pred, target):
    """Per-image masked MSE + L1 of ``pred`` (..., H, W, 1) against ``target`` (H, W, 1): NumPy reference."""
    valid = np.isfinite(target) & (target != 0)
    diff = (pred - np.where(valid, target, 0.0)) * valid
    count = max(valid.sum(), 1)
    axes = tuple(range(pred.ndim - 3, pred.ndim))
    return (diff ** 2).sum(axis=axes) / count + np.abs(diff).sum(axis=axes) / count


@pytest.fixture(scope="module")
def sl_model():
    return _sl()


# -- prediction ---------------------------------------------------------------------------------
def test_predict_is_the_mean_of_the_selected_slices_with_spread_and_quality(sl_model):
    model = sl_model
    model.selected_slices = [1, 2]
    x = _raw(2)  # at the network size: no resizing
    slices = model.predict_slices(x, verbose=0)
    assert slices.shape == (2, 4, SIZE, SIZE, 1)
    assert np.ptp(slices, axis=1).max() > 1e-4  # the slices differ, so the checks below can fail
    picked = slices[:, [1, 2]]
    depth = model.predict(x, verbose=0)
    np.testing.assert_allclose(depth, picked.mean(axis=1), atol=1e-5)
    assert not np.allclose(depth, slices.mean(axis=1), atol=1e-4)  # not the mean of ALL slices

    d, uncertainty, q = model.predict_uncertainty(x, verbose=0)
    np.testing.assert_allclose(d, depth, atol=1e-6)
    np.testing.assert_allclose(uncertainty, picked.std(axis=1), atol=1e-5)  # population std (ddof 0)
    ref_q = keras.ops.convert_to_numpy(depth_quality(slices, [1, 2]))
    assert q.shape == (2,)
    np.testing.assert_allclose(q, ref_q, atol=1e-5)
    d2, q2 = model.predict_quality(x, verbose=0)
    np.testing.assert_allclose(d2, depth, atol=1e-6)
    np.testing.assert_allclose(q2, q, atol=1e-6)

    # Q, depth and spread follow the selection. ([0, 3] would pair the same slices as [1, 2] when s = m / 2:
    # Q only depends on the selected / unselected pairs.)
    model.selected_slices = [0, 1]
    try:
        d3, u3, q3 = model.predict_uncertainty(x, verbose=0)
        np.testing.assert_allclose(d3, slices[:, [0, 1]].mean(axis=1), atol=1e-5)
        np.testing.assert_allclose(u3, slices[:, [0, 1]].std(axis=1), atol=1e-5)
        np.testing.assert_allclose(q3, keras.ops.convert_to_numpy(depth_quality(slices, [0, 1])), atol=1e-5)
        assert np.abs(q3 - q).max() > 1e-5
    finally:
        model.selected_slices = [1, 2]


def test_predict_restores_each_input_size(sl_model):
    model = sl_model
    images = _raw(2, 45, 37)
    depth = model.predict(images, verbose=0)
    assert depth.shape == (2, 45, 37, 1) and depth.dtype == np.float32
    mixed = [images[0], images[1, :20, :33], _raw(1, 7, 40)[0]]
    out, uncertainty, q = model.predict_uncertainty(mixed, verbose=0)
    assert isinstance(out, list) and [o.shape for o in out] == [(45, 37, 1), (20, 33, 1), (7, 40, 1)]
    assert [u.shape for u in uncertainty] == [(45, 37, 1), (20, 33, 1), (7, 40, 1)]
    assert len(q) == 3 and all(np.isfinite(v) and 0 < v <= 1 for v in q)
    assert all((u >= 0).all() for u in uncertainty)
    np.testing.assert_allclose(out[0], depth[0], atol=1e-5)  # the same image alone or in a list
    assert [s.shape for s in model.predict_slices(mixed[1:], verbose=0)] == [(4, 20, 33, 1), (4, 7, 40, 1)]


def test_empty_batches_give_empty_outputs(sl_model):
    d, u, q = sl_model.predict_uncertainty(np.zeros((0, SIZE, SIZE, 3), "uint8"), verbose=0)
    assert d.shape == (0, SIZE, SIZE, 1) and u.shape == (0, SIZE, SIZE, 1) and q.shape == (0,)
    d, q = sl_model.predict_quality(np.zeros((0, SIZE, SIZE, 3), "uint8"), verbose=0)
    assert d.shape == (0, SIZE, SIZE, 1) and q.shape == (0,)
    assert sl_model.predict(np.zeros((0, 20, 24, 3), "uint8"), verbose=0).shape == (0, 20, 24, 1)
    assert [len(o) for o in sl_model.predict_uncertainty([], verbose=0)] == [0, 0, 0]


def test_flat_depth_estimator_is_linear_at_the_input_size():
    model = _flat()
    x = _raw(2)
    depth = model.predict(x, verbose=0)
    manual = keras.ops.convert_to_numpy(model(model.preprocessor.normalize(x.astype("float32"))))
    np.testing.assert_allclose(depth, manual, atol=1e-5)  # no activation on the head
    assert model.activation is None and "activation" not in model.get_config()
    out = model.predict([x[0], x[1, :17, :23]], verbose=0)
    assert [o.shape for o in out] == [(SIZE, SIZE, 1), (17, 23, 1)]
    assert model.predict(x[:0], verbose=0).shape == (0, SIZE, SIZE, 1)
    with pytest.raises(TypeError, match="predict"):
        model.segment(x, verbose=0)


def test_segment_and_classification_heads_are_refused(sl_model):
    with pytest.raises(TypeError, match="predicts depth"):
        sl_model.segment(_raw(1), verbose=0)
    with pytest.raises(ValueError, match="linear head"):
        _sl(activation="sigmoid")
    with pytest.raises(ValueError, match="linear head"):
        DepthEstimator(keras_sl.UNet(2, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1),
                       activation="sigmoid")
    net = keras_sl.UNet(3, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1, input_shape=(4, None, None, 3))
    with pytest.raises(ValueError, match="num_selected >= 2"):
        SLDepthEstimator(net, lift_depth=4, num_selected=1)


# -- saving ---------------------------------------------------------------------------------------
def test_config_and_preset_round_trips(tmp_path):
    x = _raw(2)
    model = _sl()
    model.selected_slices = [0, 3]  # not the default (central) selection
    ref = model.predict_uncertainty(x, verbose=0)
    config = model.get_config()
    assert "activation" not in config and config["selected_slices"] == [0, 3]
    clone = SLDepthEstimator.from_config(config)
    assert clone.get_config() == config and clone.selected_slices == [0, 3]
    assert clone.slice_head.quality_kind == "depth" and clone.preprocessor == model.preprocessor

    model.save_to_preset(tmp_path / "preset")
    restored = keras_sl.presets.load_preset(tmp_path / "preset")
    assert type(restored) is SLDepthEstimator and restored.preprocessor == model.preprocessor
    assert restored.selected_slices == [0, 3] and restored.num_selected == 2 and restored.lift_depth == 4
    assert restored.slice_head.quality_kind == "depth" and restored.activation is None
    for got, want in zip(restored.predict_uncertainty(x, verbose=0), ref):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert SLDepthEstimator.from_preset(tmp_path / "preset").selected_slices == [0, 3]


def test_flat_round_trips(tmp_path):
    x = _raw(2)
    model = _flat()
    config = model.get_config()
    assert DepthEstimator.from_config(config).get_config() == config
    model.save_to_preset(tmp_path / "preset")
    restored = keras_sl.presets.load_preset(tmp_path / "preset")
    assert type(restored) is DepthEstimator and restored.activation is None
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


# -- compile and fit ----------------------------------------------------------------------------------
def test_compile_defaults():
    sl, flat = _sl(), _flat()
    sl.compile()
    flat.compile()
    assert isinstance(sl.loss, SliceSupervision) and isinstance(sl.loss.loss, MaskedDepthLoss)
    assert isinstance(flat.loss, MaskedDepthLoss)
    assert isinstance(sl.optimizer, keras.optimizers.AdamW) and isinstance(flat.optimizer, keras.optimizers.AdamW)
    assert [m.from_slices for m in sl._default_metrics()] == [True] * 3
    x, y = _raw(2), _depth_targets(2)
    # The 2-D monitors score the prediction with the NumPy definitions (the SL ones: test_fit_... below).
    from keras_sl.metrics.depth import depth_metrics

    ref = depth_metrics(flat.predict(x, verbose=0), y)["mean"]
    logs = flat.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "rmse", "abs_rel", "delta1"}, logs
    for k in ("rmse", "abs_rel", "delta1"):
        np.testing.assert_allclose(logs[k], ref[k], rtol=1e-4, atol=1e-6)


def _fit_data():
    x = _raw(4, seed=3)
    y = _depth_targets(4, seed=3)
    return x, y, np.where(y == 0, np.nan, y).astype("float32")


def test_fit_ignores_invalid_pixels_learns_and_selects_slices():
    x, y, y_nan = _fit_data()
    model = _sl()
    model.compile()
    # The loss is masked L1 + MSE on every slice, over valid pixels only: 0 and NaN mark the same pixels.
    loss0 = model.evaluate(x, y, verbose=0, return_dict=True)
    loss_nan = model.evaluate(x, y_nan, verbose=0, return_dict=True)
    assert set(loss0) == {"loss", "rmse", "abs_rel", "delta1"}, loss0
    for k in loss0:
        np.testing.assert_allclose(loss_nan[k], loss0[k], rtol=1e-6, err_msg=k)
    slices = model.predict_slices(x, verbose=0)
    manual = np.mean([_masked_l1_mse(slices[i], y[i]).mean() for i in range(4)])
    np.testing.assert_allclose(loss0["loss"], manual, rtol=1e-4)
    y_changed = y.copy()
    y_changed[:, 10:12, 10:12] = 0.0  # invalidating pixels does change it: the check above can fail
    assert abs(model.evaluate(x, y_changed, verbose=0, return_dict=True)["loss"] - loss0["loss"]) > 1e-6

    selection = SliceSelection((x, y), verbose=0)
    history = model.fit(x, y, epochs=3, batch_size=2, verbose=0, shuffle=False, callbacks=[selection])
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses

    # Slice selection on the depth loss: the s lowest per-slice losses of the final model (eqs. 6-7).
    slices = model.predict_slices(x, verbose=0)
    per_slice = np.mean([_masked_l1_mse(slices[i], y[i]) for i in range(4)], axis=0)
    np.testing.assert_allclose(model.slice_losses, per_slice, rtol=1e-4)
    assert model.selected_slices == sorted(np.argsort(per_slice, kind="stable")[:2].tolist())
    assert model.slice_head.has_selection and selection.history[-1]["selected"] == model.selected_slices


@pytest.mark.parametrize("bad", [-1.0, np.inf])
@pytest.mark.parametrize("preprocess", [True, False])
def test_fit_refuses_negative_or_infinite_depths_naming_the_map(bad, preprocess):
    x, y, _ = _fit_data()
    model = _sl()
    model.compile()
    y[2, 3, 4] = bad
    x_in = x if preprocess else model.preprocessor.normalize(x.astype("float32"))
    with pytest.raises(ValueError, match="depth map 2"):
        model.fit(x_in, y, epochs=1, verbose=0, preprocess=preprocess)


@pytest.mark.slow
def test_training_on_nan_marked_invalid_pixels_is_the_same_run():
    x, y, y_nan = _fit_data()
    weights = _sl().get_weights()
    runs = []
    for target in (y, y_nan):
        model = _sl()
        model.compile()
        model.set_weights(weights)
        history = model.fit(x, target, epochs=2, batch_size=2, verbose=0, shuffle=False)
        runs.append((history.history["loss"], model.get_weights()))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5)
    for a, b in zip(runs[1][1], runs[0][1]):
        np.testing.assert_allclose(a, b, atol=1e-5)


# -- SliceHead quality kinds ---------------------------------------------------------------------------
def _slice_values(seed=0):
    return np.random.default_rng(seed).uniform(0.5, 3.0, (2, 6, 5, 5, 1)).astype("float32")


def test_slice_head_quality_kinds():
    s = _slice_values()
    s[:, :, :2] -= 2.0  # some negative logits, so the Dice of thresholded maps is not trivially 1
    dice = SliceHead(depth=6, num_selected=2, activation=None, reduction="mean", selected_slices=[1, 4],
                     quality="dice")
    assert dice.quality_kind == "dice"
    _, q = dice(s, return_quality=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(q),
                               keras.ops.convert_to_numpy(dice_quality(s, [1, 4])), atol=1e-6)
    with pytest.raises(ValueError, match="return_uncertainty"):
        dice(s, return_uncertainty=True)

    auto = SliceHead(depth=6, num_selected=2, activation=None, reduction="mean", selected_slices=[1, 4])
    assert auto.quality_kind == "depth"
    pred, q, unc = (keras.ops.convert_to_numpy(t) for t in auto(s, return_quality=True, return_uncertainty=True))
    np.testing.assert_allclose(q, keras.ops.convert_to_numpy(depth_quality(s, [1, 4])), atol=1e-6)
    assert np.abs(q - keras.ops.convert_to_numpy(dice_quality(s, [1, 4]))).max() > 1e-3
    np.testing.assert_allclose(pred, s[:, [1, 4]].mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(unc, s[:, [1, 4]].std(axis=1), atol=1e-6)
    assert SliceHead(depth=6, num_selected=2, activation="sigmoid").quality_kind == "dice"
    assert SliceHead(depth=6, num_selected=2, activation="sigmoid", quality="depth").quality_kind == "depth"
    with pytest.raises(ValueError, match="quality"):
        SliceHead(depth=6, num_selected=2, quality="psnr")


def test_slice_head_config_without_quality_still_loads():
    for activation, kind in (("sigmoid", "dice"), (None, "depth")):
        head = SliceHead(depth=6, num_selected=2, activation=activation, reduction="mean",
                         selected_slices=[0, 5], quality="auto")
        config = head.get_config()
        assert config["quality"] == "auto"
        del config["quality"]  # a config saved before SliceHead had the argument
        old = SliceHead.from_config(config)
        assert old.quality_kind == kind and old.get_selected() == [0, 5]
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
        assert restored.quality == "auto" and restored.quality_kind == kind


def test_sl_segmenter_keeps_the_dice_quality():
    net = keras_sl.UNet(3, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1, input_shape=(6, None, None, 3))
    model = keras_sl.SLSegmenter(net, lift_depth=6, num_selected=2, selected_slices=[1, 4])
    assert model.slice_head.quality_kind == "dice" and model.slice_head.quality == "auto"
    logits = _slice_values()
    logits[:, :, :2] -= 2.0
    _, q = model.slice_head(logits, return_quality=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(q),
                               keras.ops.convert_to_numpy(dice_quality(logits, [1, 4])), atol=1e-6)
