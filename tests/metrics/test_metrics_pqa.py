"""Dice / IoU metrics on hand-made masks, PQA quality Q and its correlation with Dice."""

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy import stats

from keras_sl import pqa
from keras_sl.layers import SliceHead
from keras_sl.metrics import Dice, IoU, dice_per_image, iou_per_image


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def mask(*pixels, shape=(4, 4)):
    m = np.zeros(shape, "float32")
    for p in pixels:
        m[p] = 1
    return m


A = mask((0, 0), (0, 1), (1, 0), (1, 1))  # 4 pixels
B = mask((0, 0), (0, 1), (2, 2), (3, 3))  # 4 pixels, 2 of them in A
EMPTY = mask()


@pytest.fixture
def binary_batch():
    """(y_true, y_pred) of 3 images: Dice 0.5 / 1 (both empty) / 0 (nothing predicted)."""
    y_true = np.stack([A, EMPTY, A])[..., None]
    y_pred = np.stack([B, EMPTY, EMPTY])[..., None]
    return y_true, y_pred


# ---------------------------------------------------------------------------
# Dice / IoU
# ---------------------------------------------------------------------------
def test_dice_iou_per_image_known_values(binary_batch):
    y_true, y_pred = binary_batch
    np.testing.assert_allclose(dice_per_image(y_true, y_pred), [0.5, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(iou_per_image(y_true, y_pred), [1 / 3, 1.0, 0.0], atol=1e-6)
    # Symmetric in its arguments, and perfect on itself.
    np.testing.assert_allclose(dice_per_image(y_pred, y_true), [0.5, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(dice_per_image(y_true, y_true), [1.0, 1.0, 1.0], atol=1e-6)


def test_dice_metric_accumulates(binary_batch):
    y_true, y_pred = binary_batch
    metric = Dice()
    metric.update_state(y_true, y_pred)
    assert float(np_(metric.result())) == pytest.approx(0.5, abs=1e-6)  # (0.5 + 1 + 0) / 3
    metric.update_state(y_true[:1], y_true[:1])  # one more perfect image
    assert float(np_(metric.result())) == pytest.approx((1.5 + 1.0) / 4, abs=1e-6)
    metric.reset_state()
    assert float(np_(metric.result())) == 0.0
    metric.update_state(y_true, y_pred, sample_weight=np.array([2.0, 0.0, 1.0], "float32"))
    assert float(np_(metric.result())) == pytest.approx((2 * 0.5 + 0 + 0) / 3, abs=1e-6)


def test_iou_metric(binary_batch):
    y_true, y_pred = binary_batch
    metric = IoU()
    metric.update_state(y_true, y_pred)
    assert float(np_(metric.result())) == pytest.approx((1 / 3 + 1 + 0) / 3, abs=1e-6)
    assert metric.name == "iou" and Dice().name == "dice"


def test_metric_channels_first(binary_batch):
    y_true, y_pred = binary_batch
    metric = Dice(data_format="channels_first")
    metric.update_state(np.moveaxis(y_true, -1, 1), np.moveaxis(y_pred, -1, 1))
    assert float(np_(metric.result())) == pytest.approx(0.5, abs=1e-6)


def test_empty_empty_is_one():
    y = np.zeros((2, 4, 4, 1), "float32")
    np.testing.assert_allclose(dice_per_image(y, y), [1.0, 1.0])
    np.testing.assert_allclose(iou_per_image(y, y), [1.0, 1.0])
    y_pred = np.zeros_like(y)
    y_pred[1, 0, 0] = 1  # a false positive on an empty image
    np.testing.assert_allclose(dice_per_image(y, y_pred), [1.0, 0.0])


def test_thresholds_and_logits():
    y_true = np.array([0.0, 0.0, 1.0, 1.0], "float32").reshape(1, 1, 4, 1)
    probs = np.array([0.2, 0.5, 0.51, 0.9], "float32").reshape(1, 1, 4, 1)
    # 0.5 is not above the threshold: prediction {2, 3} == truth.
    assert dice_per_image(y_true, probs)[0] == pytest.approx(1.0)
    # threshold 0.7 keeps only pixel 3: Dice 2*1/(2+1).
    assert dice_per_image(y_true, probs, threshold=0.7)[0] == pytest.approx(2 / 3)
    logits = np.array([-2.0, 0.0, 0.1, 3.0], "float32").reshape(1, 1, 4, 1)
    assert dice_per_image(y_true, logits, from_logits=True)[0] == pytest.approx(1.0)
    # threshold 0.7 <=> logit > log(0.7/0.3) = 0.847: only pixel 3 again.
    assert dice_per_image(y_true, logits, threshold=0.7, from_logits=True)[0] == pytest.approx(2 / 3)
    # Without from_logits, logits would be read as probabilities: 3.0 > 0.5 but 0.1 is not.
    assert dice_per_image(y_true, logits)[0] == pytest.approx(2 / 3)
    metric = IoU(from_logits=True, threshold=0.7)
    metric.update_state(y_true, logits)
    assert float(np_(metric.result())) == pytest.approx(0.5)


def test_multiclass_argmax():
    labels_true = np.array([[0, 1, 1], [2, 2, 0]])
    labels_pred = np.array([[1, 1, 0], [2, 0, 0]])
    onehot_true = np.eye(3, dtype="float32")[labels_true][None]  # (1, 2, 3, 3)
    scores = (np.eye(3, dtype="float32")[labels_pred] * 5.0 - 1.0)[None]
    # class 1: true {1, 2}, pred {0, 1}: Dice 2/4, IoU 1/3; class 2: true {3, 4}, pred {3}: Dice 2/3, IoU 1/2
    dice = (0.5 + 2 / 3) / 2
    iou = (1 / 3 + 1 / 2) / 2
    assert dice_per_image(onehot_true, scores, num_classes=3)[0] == pytest.approx(dice)
    assert iou_per_image(onehot_true, scores, num_classes=3)[0] == pytest.approx(iou)
    # Integer labels with a trailing axis of size 1 give the same result.
    int_true = labels_true[None, ..., None].astype("float32")
    assert dice_per_image(int_true, scores, num_classes=3)[0] == pytest.approx(dice)
    metric = Dice(num_classes=3)
    metric.update_state(int_true, scores)
    assert float(np_(metric.result())) == pytest.approx(dice)
    # A class absent from both maps counts as agreement (Dice 1).
    only1 = np.array([[0, 1, 1], [0, 0, 0]])
    only1_scores = np.eye(3, dtype="float32")[only1][None]
    assert dice_per_image(np.eye(3, dtype="float32")[only1][None], only1_scores, num_classes=3)[0] == 1.0


def test_from_slices_uses_mean_logit():
    y_true = np.array([1.0, 1.0, 0.0, 0.0], "float32").reshape(1, 1, 4, 1)
    # 3 slices; mean logits per pixel: 1/3, -1/3, 1/3, -1
    slices = np.array(
        [[3.0, 1.0, 2.0, -1.0], [-1.0, -2.0, -3.0, -1.0], [-1.0, 0.0, 2.0, -1.0]], "float32"
    ).reshape(1, 3, 1, 4, 1)
    # prediction {0, 2}, truth {0, 1}: Dice 2*1/4 = 0.5
    metric = Dice(from_logits=True, from_slices=True)
    metric.update_state(y_true, slices)
    assert float(np_(metric.result())) == pytest.approx(0.5)
    # channels_first slices (B, K, m, H, W)
    metric_cf = Dice(from_logits=True, from_slices=True, data_format="channels_first")
    metric_cf.update_state(np.moveaxis(y_true, -1, 1), np.moveaxis(slices, -1, 1))
    assert float(np_(metric_cf.result())) == pytest.approx(0.5)
    # Slice 0 alone would have given Dice 2*2/(3+2) = 0.8: the mean really is used.
    assert dice_per_image(y_true, slices[:, 0], from_logits=True)[0] == pytest.approx(0.8)


def test_metric_config_round_trip():
    metric = Dice(num_classes=3, threshold=0.3, from_logits=True, from_slices=True,
                  data_format="channels_first", name="sl_dice")
    clone = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert isinstance(clone, Dice)
    assert (clone.num_classes, clone.threshold, clone.from_logits, clone.from_slices, clone.data_format,
            clone.name) == (3, 0.3, True, True, "channels_first", "sl_dice")


# ---------------------------------------------------------------------------
# PQA quality Q (eq. 11)
# ---------------------------------------------------------------------------
def slice_logits(*maps):
    """(m, H, W, 1) logits: +1 where the map is set, -1 elsewhere."""
    return (2.0 * np.stack(maps) - 1.0)[..., None].astype("float32")


@pytest.fixture
def pqa_batch():
    # Pairwise Dice: A-A 1, A-B 0.5, anything non-empty vs empty 0, empty-empty 1.
    return np.stack([
        slice_logits(A, A, B, EMPTY),
        slice_logits(A, A, A, B),
        slice_logits(EMPTY, EMPTY, EMPTY, EMPTY),
    ])  # (3, 4, 4, 4, 1)


@pytest.mark.parametrize(
    "selected, expected",
    [
        # image 0: S={0,1}: pairs (0,2) .5, (0,3) 0, (1,2) .5, (1,3) 0
        # image 1: S={0,1}: (0,2) 1, (0,3) .5, (1,2) 1, (1,3) .5
        ([0, 1], [0.25, 0.75, 1.0]),
        # image 0: S={0,2}: (0,1) 1, (0,3) 0, (2,1) .5, (2,3) 0; image 1: (0,1) 1, (0,3) .5, (2,1) 1, (2,3) .5
        ([0, 2], [0.375, 0.75, 1.0]),
        # s=1: image 0: (2,0) .5, (2,1) .5, (2,3) 0; image 1: (2,0) 1, (2,1) 1, (2,3) .5
        ([2], [1 / 3, 2.5 / 3, 1.0]),
        # image 0: (3,*) all 0; image 1: (3,*) all .5
        ([3], [0.0, 0.5, 1.0]),
    ],
)
def test_quality_hand_computed(pqa_batch, selected, expected):
    q = np_(pqa.quality(pqa_batch, selected))
    assert q.shape == (3,)
    np.testing.assert_allclose(q, expected, atol=1e-6)
    # channels_first (B, K, m, H, W)
    q_cf = np_(pqa.quality(np.moveaxis(pqa_batch, -1, 1), selected, data_format="channels_first"))
    np.testing.assert_allclose(q_cf, expected, atol=1e-6)


def test_quality_selected_forms(pqa_batch):
    expected = [0.375, 0.75, 1.0]
    for selected in ([0, 2], (2, 0), np.array([0, 2]), np.array([2, 0], "int32")):
        np.testing.assert_allclose(np_(pqa.quality(pqa_batch, selected)), expected, atol=1e-6)
    head = SliceHead(depth=4, num_selected=2, selected_slices=[0, 2])
    np.testing.assert_allclose(np_(pqa.quality(pqa_batch, head.selected)), expected, atol=1e-6)
    _, q = head(pqa_batch, return_quality=True)
    np.testing.assert_allclose(np_(q), expected, atol=1e-6)
    with pytest.raises(ValueError, match="unselected"):
        pqa.quality(pqa_batch, [0, 1, 2, 3])


def test_quality_smooth(pqa_batch):
    # image 0, S={0,1}: A-B (2*2+1)/(8+1) = 5/9 twice, A-empty (0+1)/(4+1) = 1/5 twice
    q = np_(pqa.quality(pqa_batch, [0, 1], smooth=1.0))
    assert q[0] == pytest.approx((2 * 5 / 9 + 2 * 0.2) / 4, abs=1e-6)
    assert q[2] == pytest.approx(1.0)


def test_quality_multiclass():
    def onehot_logits(labels):
        return np.eye(3, dtype="float32")[np.array(labels)][None] * 4.0  # (1, W, K), H=1

    # slice 0 and 1 identical; slice 2: class 1 {0} vs {0, 1} (Dice 2/3), class 2 {2, 3} vs {2} (2/3)
    logits = np.stack([
        onehot_logits([1, 1, 2, 0]),
        onehot_logits([1, 1, 2, 0]),
        onehot_logits([1, 0, 2, 2]),
    ])[None]  # (B=1, m=3, H=1, W=4, K=3)
    q = np_(pqa.quality(logits, [0]))
    assert q[0] == pytest.approx((1.0 + 2 / 3) / 2, abs=1e-6)
    q_cf = np_(pqa.quality(np.moveaxis(logits, -1, 1), [0], data_format="channels_first"))
    assert q_cf[0] == pytest.approx(5 / 6, abs=1e-6)
    # Selecting slice 2: pairs (2,0) and (2,1) both 2/3.
    assert np_(pqa.quality(logits, [2]))[0] == pytest.approx(2 / 3, abs=1e-6)


# ---------------------------------------------------------------------------
# correlation (Table IV)
# ---------------------------------------------------------------------------
def test_correlation_matches_scipy(rng):
    q = rng.random(25)
    dice = 0.7 * q + 0.3 * rng.random(25)
    r = pqa.correlation(q, dice)
    pr = stats.pearsonr(q, dice)
    sr = stats.spearmanr(q, dice)
    assert r["n"] == 25
    assert r["pearson_r"] == pytest.approx(float(pr.statistic), rel=1e-12)
    assert r["pearson_p"] == pytest.approx(float(pr.pvalue), rel=1e-9)
    assert r["spearman_rho"] == pytest.approx(float(sr.statistic), rel=1e-12)
    assert r["spearman_p"] == pytest.approx(float(sr.pvalue), rel=1e-9)
    assert r["pearson_r"] > 0.5
    # Known small case, by hand: cov 0.30125, var(q) 0.2675, var(dice) 0.366875 (sums of squares).
    small = pqa.correlation([0.2, 0.5, 0.9, 0.7], [0.1, 0.6, 0.95, 0.6])
    assert small["pearson_r"] == pytest.approx(0.30125 / math.sqrt(0.2675 * 0.366875), rel=1e-9)
    assert small["pearson_r"] == pytest.approx(0.9616, abs=1e-4)
    assert small["spearman_rho"] == pytest.approx(0.9486833, abs=1e-6)  # ranks q 1,2,4,3 vs d 1,2.5,4,2.5
    # A perfectly anti-monotone relation.
    assert pqa.correlation([1, 2, 3, 4], [9, 4, 1, 0])["spearman_rho"] == pytest.approx(-1.0)


def test_correlation_constant_input_is_nan():
    for q, dice in (([0.5] * 5, [0.1, 0.2, 0.3, 0.4, 0.5]), ([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])):
        r = pqa.correlation(q, dice)
        assert all(math.isnan(r[k]) for k in ("pearson_r", "pearson_p", "spearman_rho", "spearman_p"))
        assert r["n"] == len(q)


def test_correlation_validation():
    with pytest.raises(ValueError, match="at least 3"):
        pqa.correlation([0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match="same length"):
        pqa.correlation([0.1, 0.2, 0.3], [0.3, 0.4])


def test_correlation_docstring_example():
    import doctest

    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(pqa.correlation, "correlation", globs={"correlation": pqa.correlation}):
        runner.run(test, out=lambda _: None)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
