"""Pixel metrics inside a region of interest (retinal-vessel papers' field of view), on the host.

Vessel segmentation is scored on the pixels of the field of view (FOV) only:
Dice (F1), sensitivity, specificity, accuracy at a threshold, and the area
under the ROC curve of the probabilities. :func:`region_metrics` scores one
image; :class:`PooledRegionMetrics` accumulates the pixels of many images
into the pooled (dataset-level) figures most vessel papers report.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

#: The metrics :func:`region_metrics` returns, in report order.
REGION_METRIC_NAMES = ("dice", "iou", "auc", "sensitivity", "specificity", "accuracy")


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann–Whitney
    U with average ranks for ties); NaN when only one class is present.

    Example:
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([0, 1, 1], [0.5, 0.5, 0.9])
    0.75
    """
    labels = np.asarray(labels).ravel() > 0.5
    scores = np.asarray(scores, dtype="float64").ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in size: {labels.size} and {scores.size}.")
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def _scores(tp: float, fp: float, fn: float, tn: float) -> dict:
    def ratio(num, den, empty=1.0):
        return float(num / den) if den > 0 else empty

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "sensitivity": ratio(tp, tp + fn, float("nan")),
        "specificity": ratio(tn, tn + fp, float("nan")),
        "accuracy": ratio(tp + tn, tp + fp + fn + tn, float("nan")),
    }


def _region_pixels(mask, prob, region):
    mask = np.asarray(mask, dtype="float32")
    prob = np.asarray(prob, dtype="float32")
    if mask.ndim == 3:
        mask = mask[..., 0]
    if prob.ndim == 3:
        prob = prob[..., 0]
    if mask.shape != prob.shape:
        raise ValueError(f"The mask is {mask.shape} but the prediction {prob.shape}; predict at the mask's size.")
    if region is None:
        keep = np.ones(mask.shape, bool)
    else:
        keep = np.asarray(region)
        keep = (keep[..., 0] if keep.ndim == 3 else keep) > 0.5
        if keep.shape != mask.shape:
            raise ValueError(f"The region mask is {keep.shape} but the image {mask.shape}.")
    return mask[keep] >= 0.5, prob[keep]


def region_metrics(mask, prob, region=None, threshold: float = 0.5) -> dict:
    """Dice, IoU, AUC, sensitivity, specificity and accuracy of the
    probabilities ``prob`` against the binary ``mask``, on the pixels where
    ``region`` is set (all pixels when None). ``(H, W)`` or ``(H, W, 1)`` arrays.

    Example:
    >>> m = np.array([[1, 0], [0, 0]]); p = np.array([[0.9, 0.6], [0.2, 0.1]])
    >>> r = region_metrics(m, p, region=np.array([[1, 0], [1, 1]]))
    >>> r["dice"], r["specificity"], r["auc"]
    (1.0, 1.0, 1.0)
    """
    truth, prob = _region_pixels(mask, prob, region)
    pred = prob >= threshold
    tp = float(np.sum(truth & pred))
    fp = float(np.sum(~truth & pred))
    fn = float(np.sum(truth & ~pred))
    tn = float(np.sum(~truth & ~pred))
    return {**_scores(tp, fp, fn, tn), "auc": roc_auc(truth, prob)}


class PooledRegionMetrics:
    """The metrics of :func:`region_metrics` over the region pixels of many
    images pooled together (every pixel weighs the same).

    Example:
    >>> pooled = PooledRegionMetrics()
    >>> pooled.add(np.array([[1, 0]]), np.array([[0.8, 0.3]]))
    >>> pooled.add(np.array([[0, 1]]), np.array([[0.6, 0.7]]))
    >>> r = pooled.result(); r["sensitivity"], r["specificity"], r["auc"]
    (1.0, 0.5, 1.0)
    """

    def __init__(self, threshold: float = 0.5):
        self.threshold = float(threshold)
        self._truth, self._prob = [], []

    def add(self, mask, prob, region=None) -> None:
        truth, prob = _region_pixels(mask, prob, region)
        self._truth.append(truth)
        self._prob.append(prob.astype("float32"))

    def result(self) -> dict:
        if not self._truth:
            return {name: float("nan") for name in REGION_METRIC_NAMES}
        truth, prob = np.concatenate(self._truth), np.concatenate(self._prob)
        pred = prob >= self.threshold
        counts = [float(np.sum(a & b)) for a, b in ((truth, pred), (~truth, pred), (truth, ~pred), (~truth, ~pred))]
        return {**_scores(*counts), "auc": roc_auc(truth, prob)}
