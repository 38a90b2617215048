"""Metrics inside a region of interest (vessel papers' field of view): roc_auc, region_metrics, pooling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keras_sl.metrics import PooledRegionMetrics, region_metrics, roc_auc
from keras_sl.metrics.region import REGION_METRIC_NAMES


def _pairwise_auc(labels, scores) -> float:
    """AUC by brute force: the fraction of (positive, negative) pairs ranked right, a tie counting 1/2."""
    labels = np.asarray(labels).ravel() > 0.5
    scores = np.asarray(scores, dtype="float64").ravel()
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


# -- roc_auc ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_roc_auc_equals_the_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    labels = rng.random(n) < rng.uniform(0.2, 0.8)
    labels[:2] = [True, False]  # both classes
    # few distinct values: many ties, within and across the classes; scores correlated with the labels
    scores = np.round(rng.random(n) * 4 + labels * rng.uniform(0, 2)) / 4
    assert np.unique(scores).size < n  # there are ties
    assert roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)
    # labels as 0/1 floats and (H, W) arrays give the same
    assert roc_auc(labels.astype("float32").reshape(1, n), scores.reshape(n, 1)) == pytest.approx(
        _pairwise_auc(labels, scores), abs=1e-12)


def test_roc_auc_extremes_and_one_class():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all ties
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(roc_auc([0, 0], [0.1, 0.5]))
    with pytest.raises(ValueError, match="differ in size"):
        roc_auc([0, 1, 1], [0.1, 0.2])


# -- region_metrics -----------------------------------------------------------------------------------
MASK = np.array([[1, 1, 0, 0],
                 [1, 0, 0, 0],
                 [0, 0, 1, 0]], "float32")
PROB = np.array([[0.9, 0.4, 0.7, 0.1],
                 [0.8, 0.2, 0.6, 0.3],
                 [0.1, 0.9, 0.55, 0.2]], "float32")
REGION = np.array([[1, 1, 1, 0],
                   [1, 1, 1, 0],
                   [1, 1, 1, 0]], "uint8")  # the last column is outside


def test_region_metrics_hand_counted():
    # inside the region: TP 3 (0,0),(1,0),(2,2); FN 1 (0,1); FP 3 (0,2),(1,2),(2,1); TN 2 (1,1),(2,0)
    r = region_metrics(MASK, PROB, REGION)
    assert set(r) == set(REGION_METRIC_NAMES)
    assert r["dice"] == pytest.approx(6 / 10)
    assert r["iou"] == pytest.approx(3 / 7)
    assert r["sensitivity"] == pytest.approx(3 / 4)
    assert r["specificity"] == pytest.approx(2 / 5)
    assert r["accuracy"] == pytest.approx(5 / 9)
    # positives .9 .4 .8 .55 vs negatives .7 .2 .6 .1 .9: 4.5 + 2 + 4 + 2 of 20 pairs (.9 = .9 is a tie)
    assert r["auc"] == pytest.approx(12.5 / 20)
    # the whole image: the last column's three true negatives count
    whole = region_metrics(MASK, PROB)
    assert whole["specificity"] == pytest.approx(5 / 8) and whole["accuracy"] == pytest.approx(8 / 12)
    # the threshold: at 0.85 only the two 0.9 pixels are positive (TP 1, FP 1, FN 3, TN 4)
    high = region_metrics(MASK, PROB, REGION, threshold=0.85)
    assert high["dice"] == pytest.approx(2 / 6) and high["specificity"] == pytest.approx(4 / 5)
    assert high["auc"] == r["auc"]


def test_pixels_outside_the_region_are_ignored():
    ref = region_metrics(MASK, PROB, REGION)
    mask, prob = MASK.copy(), PROB.copy()
    mask[:, 3] = [1, 0, 1]
    prob[:, 3] = [0.0, 0.99, 0.2]  # outside: a FN, a FP and a FN that would count
    assert region_metrics(mask, prob, REGION) == ref
    assert region_metrics(mask, prob) != region_metrics(MASK, PROB)  # they would count without the region
    # a boolean, or a float (H, W, 1) region, is the same region
    assert region_metrics(mask, prob, REGION.astype(bool)) == ref
    assert region_metrics(mask, prob, REGION.astype("float32")[..., None]) == ref


def test_channel_axis_or_not_gives_the_same():
    rng = np.random.default_rng(1)
    mask = (rng.random((9, 11)) < 0.3).astype("float32")
    prob = rng.random((9, 11)).astype("float32")
    region = rng.random((9, 11)) < 0.7
    ref = region_metrics(mask, prob, region)
    for m, p, g in ((mask[..., None], prob, region), (mask, prob[..., None], region[..., None]),
                    (mask[..., None], prob[..., None], region[..., None].astype("uint8"))):
        got = region_metrics(m, p, g)
        np.testing.assert_equal(got, ref)


def test_one_class_in_the_region():
    region = np.zeros_like(MASK)
    region[:, 3] = 1  # only background pixels inside
    r = region_metrics(MASK, PROB, region)
    assert math.isnan(r["auc"]) and math.isnan(r["sensitivity"])
    assert r["specificity"] == 1.0 and r["accuracy"] == 1.0
    assert r["dice"] == 1.0 and r["iou"] == 1.0  # nothing to find, nothing predicted: empty agreement


def test_shape_mismatches_are_errors():
    with pytest.raises(ValueError, match="predict at the mask's size"):
        region_metrics(MASK, PROB.T)
    with pytest.raises(ValueError, match="region mask is"):
        region_metrics(MASK, PROB, REGION[:, :3])
    with pytest.raises(ValueError, match="predict at the mask's size"):
        PooledRegionMetrics().add(MASK, PROB[:2])


# -- pooled ---------------------------------------------------------------------------------------------
def test_pooled_equals_region_metrics_on_the_concatenated_pixels():
    rng = np.random.default_rng(2)
    pooled = PooledRegionMetrics()
    truths, probs = [], []
    for h, w in ((6, 7), (10, 5), (4, 4)):
        mask = (rng.random((h, w, 1)) < 0.35).astype("float32")
        prob = np.round(rng.random((h, w, 1)) * 8) / 8  # ties across images too
        region = rng.random((h, w)) < 0.6
        pooled.add(mask, prob, region)
        truths.append(mask[..., 0][region])
        probs.append(prob[..., 0][region])
    got = pooled.result()
    ref = region_metrics(np.concatenate(truths)[None], np.concatenate(probs)[None])
    assert set(got) == set(REGION_METRIC_NAMES)
    for name in REGION_METRIC_NAMES:
        assert got[name] == pytest.approx(ref[name], abs=1e-12), name
    assert 0 < got["auc"] < 1


def test_pooled_differs_from_the_mean_of_the_images():
    # a 1-pixel image found (Dice 1) and a 4-pixel one missed (Dice 0): mean 0.5, pooled 2*1 / (2*1 + 1 + 3)
    small = (np.array([[1.0]]), np.array([[0.9]]))
    large = (np.array([[1.0, 1.0, 1.0, 0.0]]), np.array([[0.1, 0.1, 0.1, 0.9]]))
    pooled = PooledRegionMetrics()
    pooled.add(*small)
    pooled.add(*large)
    mean = np.mean([region_metrics(*small)["dice"], region_metrics(*large)["dice"]])
    assert mean == pytest.approx(0.5)
    assert pooled.result()["dice"] == pytest.approx(1 / 3)
    assert pooled.result()["sensitivity"] == pytest.approx(1 / 4)
    assert pooled.result()["specificity"] == pytest.approx(0.0)


def test_empty_pool_is_nan():
    assert all(math.isnan(v) for v in PooledRegionMetrics().result().values())
