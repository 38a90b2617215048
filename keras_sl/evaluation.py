"""Evaluate segmentation models on dataset splits at the labels' resolution."""

from __future__ import annotations

import numpy as np
from PIL import Image

from keras_sl.data.normalization import normalize
from keras_sl.metrics import dice_per_image, iou_per_image
from keras_sl.pqa import correlation


def _resize_prob(prob: np.ndarray, size_hw) -> np.ndarray:
    h, w = size_hw
    if prob.shape[:2] == (h, w):
        return prob
    return np.asarray(Image.fromarray(prob[..., 0].astype("float32"), mode="F").resize((w, h), Image.BILINEAR))[..., None]


def predict_image(model, image: np.ndarray, resolution=None, normalization=None):
    """Probability map ``(H, W, 1)`` at the image's own size, and Q (SL models).

    The image is resized to ``resolution`` (or padded to the stride multiple
    when ``resolution`` is None), predicted, and the probabilities are
    resized back.
    """
    from keras_sl.datasets.pipeline import resize_pair

    h, w = image.shape[:2]
    x = image if resolution is None else resize_pair(image, None, tuple(resolution))[0]
    x = normalize(x[None], normalization)
    q = None
    if hasattr(model, "predict_quality"):
        prob, q = model.predict_quality(x, verbose=0)
        q = float(q[0])
    else:
        logits = np.asarray(model.predict(x, verbose=0))
        prob = 1.0 / (1.0 + np.exp(-logits))
    return _resize_prob(np.asarray(prob[0]), (h, w)), q


def evaluate_segmentation(model, dataset, samples, resolution=None, normalization=None, threshold: float = 0.5) -> dict:
    """Per-image Dice/IoU at the original label size, Q and PQA correlations.

    Returns ``{"dice", "iou", "n", "per_image": [...], "pqa_pearson", ...}``.
    """
    rows = []
    for sample in samples:
        image, mask = dataset.load(sample)
        prob, q = predict_image(model, image, resolution, normalization)
        d = float(dice_per_image(mask[None], prob[None], threshold=threshold)[0])
        i = float(iou_per_image(mask[None], prob[None], threshold=threshold)[0])
        rows.append({"id": sample.id, "dice": d, "iou": i, "q": q})
    dice = np.array([r["dice"] for r in rows])
    out = {
        "dice": float(dice.mean()),
        "iou": float(np.mean([r["iou"] for r in rows])),
        "n": len(rows),
        "per_image": rows,
    }
    if rows and rows[0]["q"] is not None and len(rows) >= 3:
        corr = correlation([r["q"] for r in rows], dice)
        out.update(
            pqa_pearson=corr["pearson_r"], pqa_spearman=corr["spearman_rho"],
            pqa_p_value=corr["pearson_p"], pqa_spearman_p_value=corr["spearman_p"],
        )
    return out
