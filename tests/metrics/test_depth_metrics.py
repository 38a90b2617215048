"""Depth metrics: hand-computed per-image values (masking, caps, clipping, NaN rules,
median scaling) and the Keras metrics against the NumPy ones on this backend."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_sl.metrics import (
    DEPTH_METRIC_NAMES,
    AbsRel,
    Delta1,
    DepthMAE,
    DepthRMSE,
    Log10,
    RMSELog,
    SqRel,
    depth_errors,
    depth_metrics,
)
from keras_sl.metrics.depth import valid_mask

KERAS_METRICS = {
    "rmse": DepthRMSE,
    "mae": DepthMAE,
    "abs_rel": AbsRel,
    "sq_rel": SqRel,
    "log10": Log10,
    "rmse_log": RMSELog,
    "delta1": Delta1,
}


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def keras_result(metric):
    return float(np_(metric.result()))


# ---------------------------------------------------------------------------
# Per-image NumPy metrics, by hand
# ---------------------------------------------------------------------------
# Valid pixels t = (1, 2, 4), p = (1, 2.4, 3); the 4th pixel (t = 0) is invalid.
T = np.array([[1.0, 2.0], [4.0, 0.0]])
P = np.array([[1.0, 2.4], [3.0, 7.0]])
HAND = {
    "rmse": math.sqrt((0 + 0.4**2 + 1.0**2) / 3),
    "mae": (0 + 0.4 + 1.0) / 3,
    "abs_rel": (0 + 0.4 / 2 + 1.0 / 4) / 3,
    "sq_rel": (0 + 0.16 / 2 + 1.0 / 4) / 3,
    "log10": (0 + math.log10(1.2) + abs(math.log10(0.75))) / 3,
    "rmse_log": math.sqrt((math.log(1.2) ** 2 + math.log(0.75) ** 2) / 3),
    "delta1": 2 / 3,  # ratios 1, 1.2, 4/3: 4/3 >= 1.25
    "delta2": 1.0,  # all < 1.5625
    "delta3": 1.0,
}


def test_hand_computed_image():
    errors = depth_errors(P, T)
    assert list(errors) == list(DEPTH_METRIC_NAMES)
    for name, value in HAND.items():
        assert errors[name] == pytest.approx(value, rel=1e-12), name


def test_delta_threshold_is_strict():
    # A ratio of exactly 1.25 is not < 1.25 (FastDepth / MiDaS use "<").
    t = np.array([4.0, 4.0])
    assert depth_errors(np.array([5.0, 4.0]), t)["delta1"] == 0.5
    assert depth_errors(np.array([3.2, 4.0]), t)["delta1"] == 0.5  # t/p = 1.25
    assert depth_errors(np.array([5.0, 4.0]), t)["delta2"] == 1.0


def test_invalid_target_pixels_are_ignored():
    # 0, negative, NaN and Inf targets are invalid; whatever the prediction says there.
    t = np.array([1.0, 2.0, 4.0, 0.0, -1.0, np.nan, np.inf])
    p = np.array([1.0, 2.4, 3.0, 9.0, np.nan, 5.0, -np.inf])
    assert valid_mask(t).tolist() == [True, True, True, False, False, False, False]
    errors = depth_errors(p, t)
    for name, value in HAND.items():
        assert errors[name] == pytest.approx(value, rel=1e-12), name


def test_min_max_caps_mask_targets_and_clip_predictions():
    t = np.array([0.2, 1.0, 4.0, 9.0])
    p = np.array([5.0, 0.1, 8.0, 9.0])
    # min 0.5 drops t = 0.2, max 5 drops t = 9; p clipped to [0.5, 5]: (0.5, 5) vs (1, 4).
    errors = depth_errors(p, t, min_depth=0.5, max_depth=5.0)
    assert errors["mae"] == pytest.approx((0.5 + 1.0) / 2)
    assert errors["abs_rel"] == pytest.approx((0.5 / 1 + 1.0 / 4) / 2)
    assert errors["delta1"] == 0.0  # ratios 2 and 1.25
    assert errors["delta2"] == 0.5
    # Caps are inclusive.
    assert valid_mask(np.array([0.5, 5.0]), min_depth=0.5, max_depth=5.0).tolist() == [True, True]
    with pytest.raises(ValueError, match="min_depth must be below max_depth"):
        depth_errors(p, t, min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        depth_errors(p, t, eps=0.0)


def test_non_positive_predictions_clip_to_eps():
    t = np.array([1.0, 1.0])
    p = np.array([-3.0, 0.0])
    errors = depth_errors(p, t)  # both scored as 1e-3
    assert errors["mae"] == pytest.approx(0.999)
    assert errors["abs_rel"] == pytest.approx(0.999)
    assert errors["log10"] == pytest.approx(3.0)
    assert errors["rmse_log"] == pytest.approx(math.log(1000.0))
    assert errors["delta3"] == 0.0
    assert all(math.isfinite(v) for v in errors.values())
    assert depth_errors(p, t, eps=0.01)["log10"] == pytest.approx(2.0)


def test_non_finite_prediction_on_a_valid_pixel_is_nan():
    t = np.array([1.0, 2.0])
    for bad in (np.nan, np.inf, -np.inf):
        errors = depth_errors(np.array([1.0, bad]), t, max_depth=10.0)  # never clipped into range
        assert all(math.isnan(v) for v in errors.values())


def test_median_scaling():
    # median(t) = 2, median(p) = 1: scale 2 -> p = (2, 2, 2); |diff| = (1, 0, 2).
    t = np.array([1.0, 2.0, 4.0])
    p = np.array([1.0, 1.0, 1.0])
    result = depth_metrics(p[None], t[None], median_scaling=True)
    assert result["scale"].tolist() == [2.0]
    assert result["mean"]["mae"] == pytest.approx(1.0)
    assert result["mean"]["delta1"] == pytest.approx(1 / 3)
    # A prediction right up to scale is perfect after median scaling, at any scale.
    rng = np.random.default_rng(0)
    t = rng.uniform(0.5, 5.0, (3, 4, 4, 1))
    for c in (0.1, 3.0):
        scaled = depth_metrics(c * t, t, median_scaling=True)
        assert scaled["mean"]["rmse"] == pytest.approx(0.0, abs=1e-12)
        assert scaled["mean"]["delta1"] == 1.0
        np.testing.assert_allclose(scaled["scale"], 1 / c)
    # Median scaling makes the metrics invariant to the prediction's scale.
    p = rng.uniform(0.5, 5.0, t.shape)
    a = depth_metrics(p, t, median_scaling=True)["per_image"]
    b = depth_metrics(7.0 * p, t, median_scaling=True)["per_image"]
    for name in DEPTH_METRIC_NAMES:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10)
    # Without it, the scale is 1 and the metrics change.
    assert depth_metrics(p, t)["scale"].tolist() == [1.0, 1.0, 1.0]


def test_median_scaling_uses_valid_pixels_only():
    t = np.array([1.0, 2.0, 4.0, 0.0, 0.0])
    p = np.array([1.0, 1.0, 1.0, 100.0, 100.0])  # invalid pixels do not move median(p)
    assert depth_metrics(p[None], t[None], median_scaling=True)["scale"].tolist() == [2.0]


def test_batch_means_empty_and_nonfinite_images():
    t = np.stack([T, np.zeros_like(T), T])
    p = np.stack([P, P, P * 0 + 1.0])
    r = depth_metrics(p, t)
    assert (r["n_images"], r["n"], r["n_empty"], r["n_nonfinite"]) == (3, 2, 1, 0)
    assert r["valid_pixels"].tolist() == [3, 0, 3]
    assert math.isnan(r["per_image"]["rmse"][1]) and math.isnan(r["scale"][1])
    second = depth_errors(p[2], t[2])
    for name in DEPTH_METRIC_NAMES:
        assert r["mean"][name] == pytest.approx((HAND[name] + second[name]) / 2), name
    # A non-finite prediction is counted and never averaged away.
    p[2, 0, 0] = np.nan
    r = depth_metrics(p, t)
    assert (r["n"], r["n_nonfinite"]) == (2, 1)
    assert math.isnan(r["mean"]["rmse"]) and math.isnan(r["per_image"]["delta1"][2])
    # Every image empty: NaN means, n = 0.
    r = depth_metrics(p, np.zeros_like(t))
    assert r["n"] == 0 and r["n_empty"] == 3 and math.isnan(r["mean"]["abs_rel"])


def test_shapes_layouts_and_lists():
    t = np.stack([T, T])
    p = np.stack([P, P])
    base = depth_metrics(p, t)["mean"]
    # A trailing (or leading) channel axis on either side is accepted.
    for pp, tt in ((p[..., None], t), (p, t[..., None]), (p[:, None], t[..., None])):
        assert depth_metrics(pp, tt)["mean"] == pytest.approx(base)
    # Images of different sizes as lists.
    r = depth_metrics([P, np.ones((3, 5))], [T, np.full((3, 5), 2.0)])
    assert r["per_image"]["mae"].tolist() == pytest.approx([HAND["mae"], 1.0])
    with pytest.raises(ValueError, match="selected slices"):
        depth_metrics(np.ones((2, 16, 2, 2, 1)), t[..., None])  # per-slice outputs
    with pytest.raises(ValueError, match="same batch size"):
        depth_metrics(p[:1], t)


# ---------------------------------------------------------------------------
# Keras metrics == NumPy metrics (this backend)
# ---------------------------------------------------------------------------
def make_batch(seed=0, batch=6, size=6):
    """Positive targets with invalid pixels (0 / NaN), one empty image, negative predictions."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.3, 8.0, (batch, size, size, 1)).astype("float32")
    t[rng.random(t.shape) < 0.2] = 0.0
    t[0, 0, 0, 0] = np.nan
    t[1] = 0.0  # no valid pixel
    p = (t * rng.uniform(0.6, 1.5, t.shape)).astype("float32")
    p[t == 0] = rng.uniform(-1.0, 9.0, int((t == 0).sum()))
    p[2, :2] = -0.5  # non-positive predictions on valid pixels
    p[3, 3] = 0.0
    return t, p


CAPS = [{}, {"min_depth": 0.5, "max_depth": 6.0}]


@pytest.mark.parametrize("caps", CAPS, ids=["no_caps", "caps"])
def test_keras_metrics_match_numpy(caps):
    t, p = make_batch()
    expected = depth_metrics(p, t, **caps)
    for name, cls in KERAS_METRICS.items():
        metric = cls(**caps)
        # Two updates accumulate like one pass over the data.
        metric.update_state(t[:3], p[:3])
        metric.update_state(t[3:], p[3:])
        assert keras_result(metric) == pytest.approx(expected["mean"][name], rel=2e-5), name
    for power in (2, 3):
        metric = Delta1(power=power, **caps)
        metric.update_state(t, p)
        assert metric.name == f"delta{power}"
        assert keras_result(metric) == pytest.approx(expected["mean"][f"delta{power}"], rel=1e-6)


def test_keras_metric_sample_weight_reset_and_empty():
    t, p = make_batch()
    per_image = depth_metrics(p, t)["per_image"]["rmse"]
    metric = DepthRMSE()
    w = np.array([2.0, 5.0, 0.0, 1.0, 1.0, 3.0], "float32")  # image 1 is empty: its weight is ignored
    metric.update_state(t, p, sample_weight=w)
    keep = [0, 3, 4, 5]
    expected = np.sum(per_image[keep] * w[keep]) / np.sum(w[keep])
    assert keras_result(metric) == pytest.approx(expected, rel=2e-5)
    metric.reset_state()
    assert math.isnan(keras_result(metric))  # nothing scored yet
    metric.update_state(t[1:2], p[1:2])  # only an empty image
    assert math.isnan(keras_result(metric))


def test_keras_metric_nan_prediction_propagates():
    t, p = make_batch()
    metric = AbsRel()
    p_bad = p.copy()
    p_bad[4][t[4] == 0] = np.nan  # on invalid pixels: ignored
    metric.update_state(t, p_bad)
    assert keras_result(metric) == pytest.approx(depth_metrics(p, t)["mean"]["abs_rel"], rel=2e-5)
    p_bad[4][t[4] > 0] = np.nan  # on valid pixels: NaN, as depth_metrics' mean
    for cls in (AbsRel, Delta1):
        metric = cls()
        metric.update_state(t, p_bad)
        assert math.isnan(keras_result(metric))
    assert math.isnan(depth_metrics(p_bad, t)["mean"]["delta1"])


def test_keras_metric_from_slices_and_channels_first():
    t, p = make_batch()
    expected = depth_metrics(p, t)["mean"]["rmse"]
    # (B, m, H, W, 1) slices whose mean is p.
    offsets = np.array([-0.2, 0.0, 0.2], "float32").reshape(1, 3, 1, 1, 1)
    slices = p[:, None] + offsets
    metric = DepthRMSE(from_slices=True)
    metric.update_state(t, slices)
    assert keras_result(metric) == pytest.approx(expected, rel=2e-5)
    metric = DepthRMSE(from_slices=True, data_format="channels_first")
    metric.update_state(np.moveaxis(t, -1, 1), np.moveaxis(slices, -1, 1))  # (B, 1, m, H, W)
    assert keras_result(metric) == pytest.approx(expected, rel=2e-5)
    with pytest.raises(ValueError, match="from_slices=True"):
        DepthRMSE().update_state(t, slices)


def test_keras_metric_config_round_trip():
    for cls in KERAS_METRICS.values():
        metric = cls(min_depth=0.1, max_depth=10.0, eps=1e-4)
        config = metric.get_config()
        registered = keras.saving.get_registered_object(keras.saving.get_registered_name(cls))
        assert registered is cls
        clone = registered.from_config(config)
        assert type(clone) is cls and clone.get_config() == config
    d3 = Delta1(power=3, from_slices=True, data_format="channels_first")
    clone = Delta1.from_config(d3.get_config())
    assert (clone.power, clone.name, clone.from_slices, clone.data_format) == (3, "delta3", True, "channels_first")
    assert keras.saving.get_registered_name(DepthRMSE) == "keras_sl>DepthRMSE"


def test_keras_metrics_in_compiled_evaluate():
    """The metrics inside the backend's compiled evaluation step, over several batches."""
    t, p = make_batch(seed=1)
    t, p = np.nan_to_num(t, nan=0.0), np.nan_to_num(p, nan=0.0)  # a finite loss
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    metrics = [DepthRMSE(), AbsRel(), Delta1(), Delta1(power=2), Log10()]
    model.compile(loss="mae", metrics=metrics)
    logs = model.evaluate(p, t, batch_size=4, verbose=0, return_dict=True)
    expected = depth_metrics(p, t)["mean"]
    for key in ("rmse", "abs_rel", "delta1", "delta2", "log10"):
        assert logs[key] == pytest.approx(expected[key], rel=2e-5), key
