"""Depth PQA (Q from selected vs unselected slices), per-pixel disagreement and
uncertainty maps: hand values, properties, NaN rule, graphs, and the NumPy twin."""

import itertools
import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_sl import depth_quality as dq
from keras_sl.layers import SliceHead
from keras_sl.metrics import depth_metrics


def np_(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


# Few distinct shapes: JAX compiles each eager op once per shape.
def constant_slices(values, batch=2, size=(3, 4)):
    """``(B, m, H, W, 1)`` with slice z equal to ``values[z]`` everywhere."""
    values = np.asarray(values, "float32").reshape(1, -1, 1, 1, 1)
    return np.broadcast_to(values, (batch, values.shape[1], *size, 1)).copy()


def random_slices(seed=0, batch=2, m=6, size=(3, 4)):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 6.0, (batch, 1, *size, 1))
    noise = rng.uniform(0.7, 1.4, (batch, m, *size, 1)) ** rng.uniform(0.2, 2.0, (batch, 1, 1, 1, 1))
    return (base * noise).astype("float32")


# ---------------------------------------------------------------------------
# Q and D by hand
# ---------------------------------------------------------------------------
def test_identical_slices_give_q_one_and_zero_uncertainty():
    d = random_slices()[:, :1].repeat(6, axis=1)  # every slice the same map
    mean, unc, q = (np_(t) for t in dq.slice_statistics(d, [1, 2, 3]))
    np.testing.assert_allclose(q, 1.0, atol=1e-6)
    np.testing.assert_allclose(unc, 0.0, atol=1e-5)
    np.testing.assert_allclose(mean, d[:, 0], rtol=1e-6)
    np.testing.assert_allclose(np_(dq.disagreement(d, [0])), 0.0, atol=1e-7)


def test_hand_computed_q():
    # Selected slices say 2 and 3 m, unselected 1 and 4 m:
    # |2-1|/3, |2-4|/6, |3-1|/4, |3-4|/7.
    d = constant_slices([1.0, 2.0, 3.0, 4.0])
    expected_d = (1 / 3 + 2 / 6 + 2 / 4 + 1 / 7) / 4
    dmap = np_(dq.disagreement(d, [1, 2]))
    assert dmap.shape == (2, 3, 4, 1)
    np.testing.assert_allclose(dmap, expected_d, rtol=1e-6)
    np.testing.assert_allclose(np_(dq.quality(d, [1, 2])), 1 - expected_d, rtol=1e-6)
    # Per pixel: Q averages pixels, D is the per-pixel map.
    d[1, :, 0, 0] = 1.0  # one pixel of image 1 where all slices agree
    q = np_(dq.quality(d, [1, 2]))
    np.testing.assert_allclose(q, [1 - expected_d, 1 - expected_d * 11 / 12], rtol=1e-6)
    # Q is 1 - D averaged: the fuzzy Dice 2 min(a, b) / (a + b) of the slice depths.
    a, b = 2.0, 3.0
    assert 1 - abs(a - b) / (a + b) == pytest.approx(2 * min(a, b) / (a + b))


def test_more_disagreement_lowers_q():
    base = random_slices(m=1).repeat(6, axis=1)
    qs = []
    for factor in (1.0, 1.05, 1.25, 2.0, 10.0):
        d = base.copy()
        d[:, 5] *= factor  # one unselected slice drifts away
        qs.append(float(np_(dq.quality(d, [0, 1, 2]))[0]))
    assert qs[0] == pytest.approx(1.0, abs=1e-6)
    assert all(a > b for a, b in itertools.pairwise(qs)), qs


def test_q_is_bounded_and_scale_invariant():
    d = random_slices(seed=1)
    q = np_(dq.quality(d, [0, 2, 5]))
    assert np.all((q > 0) & (q <= 1))
    for c in (0.1, 10.0):
        np.testing.assert_allclose(np_(dq.quality(c * d, [0, 2, 5])), q, rtol=1e-5)
    # Wild slices, negatives included, stay in (0, 1].
    wild = np.random.default_rng(2).normal(0, 5, d.shape).astype("float32")
    q = np_(dq.quality(wild, [0, 2, 5]))
    assert np.all((q > 0) & (q <= 1))


def test_non_positive_slices_count_as_eps():
    d = constant_slices([1.0, -1.0, 0.0, -5.0])
    eps = 1e-3
    np.testing.assert_allclose(np_(dq.disagreement(d, [0])), (1 - eps) / (1 + eps), rtol=1e-6)
    np.testing.assert_allclose(np_(dq.quality(d, [0], eps=0.5)), 1 - 0.5 / 1.5, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_in_nan_out(bad):
    d = random_slices()
    d[1, 3, 2, 1, 0] = bad  # an unselected slice of image 1
    q = np_(dq.quality(d, [0, 1]))
    assert math.isnan(q[1]) and math.isfinite(q[0])
    dmap = np_(dq.disagreement(d, [0, 1]))
    assert math.isnan(dmap[1, 2, 1, 0]) and np.isfinite(np.delete(dmap.reshape(-1), 1 * 12 + 2 * 4 + 1)).all()
    _, _, q = dq.slice_statistics(d, [0, 1])
    assert math.isnan(np_(q)[1])
    assert math.isnan(dq.slice_statistics_np(d, [0, 1])[2][1])


# ---------------------------------------------------------------------------
# Uncertainty and the mean prediction
# ---------------------------------------------------------------------------
def test_uncertainty_values_and_options():
    d = constant_slices([1.0, 2.0, 3.0, 6.0])
    mean, unc, q = (np_(t) for t in dq.slice_statistics(d, [1, 2]))
    assert mean.shape == unc.shape == (2, 3, 4, 1) and q.shape == (2,)
    np.testing.assert_allclose(mean, 2.5)
    np.testing.assert_allclose(unc, 0.5)  # population std of (2, 3)
    _, unc_all, q_all = (np_(t) for t in dq.slice_statistics(d, [1, 2], spread="all"))
    np.testing.assert_allclose(unc_all, np.std([1.0, 2.0, 3.0, 6.0]), rtol=1e-6)
    np.testing.assert_allclose(q_all, q)  # Q does not depend on the spread option
    _, rel, _ = (np_(t) for t in dq.slice_statistics(d, [1, 2], relative=True))
    np.testing.assert_allclose(rel, 0.5 / 2.5, rtol=1e-6)
    _, rel_all, _ = (np_(t) for t in dq.slice_statistics(d, [1, 2], spread="all", relative=True))
    np.testing.assert_allclose(rel_all, np.std([1.0, 2.0, 3.0, 6.0]) / 3.0, rtol=1e-6)


def test_argument_errors():
    d = constant_slices([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="at least 2 selected"):
        dq.slice_statistics(d, [1])
    mean, _, _ = dq.slice_statistics(d, [1], spread="all")  # s = 1 works with spread="all"
    np.testing.assert_allclose(np_(mean), 2.0)
    with pytest.raises(ValueError, match="unselected"):
        dq.quality(d, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="distinct"):
        dq.quality(d, [0, 0])
    with pytest.raises(ValueError, match="distinct"):
        dq.quality(d, [4])
    with pytest.raises(ValueError, match="spread"):
        dq.slice_statistics(d, [0, 1], spread="median")
    with pytest.raises(ValueError, match="eps must be > 0"):
        dq.quality(d, [0], eps=0.0)
    with pytest.raises(ValueError, match="non-batch axis"):
        dq.quality(d, [0], slice_axis=0)


def test_mean_depth_is_the_slice_head_prediction_and_layouts_agree():
    d = random_slices(seed=3)
    head = SliceHead(depth=6, num_selected=3, activation=None, reduction="mean", selected_slices=[0, 2, 5])
    mean, unc, q = dq.slice_statistics(d, head.selected)  # the head's int32 variable as the selection
    np.testing.assert_allclose(np_(mean), np_(head(d)), rtol=1e-6)
    # channels_first (B, 1, m, H, W): slice_axis=2 (or -3), outputs keep their channel axis at 1.
    cf = np.moveaxis(d, -1, 1)
    for axis in (2, -3):
        mean_cf, unc_cf, q_cf = dq.slice_statistics(cf, [0, 2, 5], slice_axis=axis)
        np.testing.assert_allclose(np_(mean_cf), np.moveaxis(np_(mean), -1, 1), rtol=1e-6)
        np.testing.assert_allclose(np_(unc_cf), np.moveaxis(np_(unc), -1, 1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np_(q_cf), np_(q), rtol=1e-6)


@pytest.mark.parametrize("spread,relative", [("selected", False), ("all", True)])
def test_keras_matches_numpy_twin(spread, relative):
    d = random_slices(seed=4)
    d[0, 1, 0, 0, 0] = -0.3  # a non-positive slice depth
    out = dq.slice_statistics(d, [1, 3, 4], spread=spread, relative=relative)
    ref = dq.slice_statistics_np(d, [1, 3, 4], spread=spread, relative=relative, return_disagreement=True)
    for got, want in zip(out, ref[:3]):
        np.testing.assert_allclose(np_(got), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_(dq.disagreement(d, [1, 3, 4])), ref[3], rtol=1e-5, atol=1e-7)


def test_slice_statistics_inside_a_compiled_graph():
    d = random_slices(seed=5)
    head = SliceHead(depth=6, num_selected=2, activation=None, reduction="mean", selected_slices=[1, 4])

    class Stats(keras.layers.Layer):
        def __init__(self, head, **kwargs):
            super().__init__(**kwargs)
            self.head = head  # tracked: its selection variable is model state on every backend

        def call(self, x):
            return dq.slice_statistics(x, self.head.selected)

    inputs = keras.Input(d.shape[1:])
    model = keras.Model(inputs, Stats(head)(inputs))
    outs = model.predict(d, verbose=0)  # the backend's compiled predict step
    ref = dq.slice_statistics_np(d, [1, 4])
    for got, want in zip(outs, ref):
        np.testing.assert_allclose(np.asarray(got, "float64"), want, rtol=1e-5, atol=1e-6)
    # A new selection in the variable is seen by the same graph.
    head.set_selected([0, 5])
    outs = model.predict(d, verbose=0)
    np.testing.assert_allclose(np.asarray(outs[2], "float64"), dq.slice_statistics_np(d, [0, 5])[2], rtol=1e-5)


# ---------------------------------------------------------------------------
# Correlation with the per-image error
# ---------------------------------------------------------------------------
def test_error_correlation_sign_as_is():
    rng = np.random.default_rng(6)
    target = rng.uniform(1.0, 5.0, (8, 4, 4, 1))
    noise = np.linspace(0.0, 0.6, 8)  # image i's slices disagree more and its mean is worse
    slices = target[:, None] * (1 + noise[:, None, None, None, None] * rng.normal(0, 1, (8, 5, 4, 4, 1)))
    slices = np.abs(slices) + 0.1
    mean, _, q = dq.slice_statistics_np(slices, [0, 1, 2])
    metrics = depth_metrics(mean, target)
    r = dq.error_correlation(q, metrics, "rmse")
    assert r["expected_sign"] == -1 and r["metric"] == "rmse" and r["n"] == 8
    assert r["pearson_r"] < 0 and r["spearman_rho"] < 0
    r1 = dq.error_correlation(q, metrics["per_image"]["delta1"], "delta1")
    assert r1["expected_sign"] == 1 and r1["spearman_rho"] > 0
    # NaN Q (non-finite slices) are dropped and counted, as keras_sl.pqa.correlation does.
    q_nan = q.copy()
    q_nan[0] = np.nan
    assert dq.error_correlation(q_nan, metrics)["n_dropped"] == 1
