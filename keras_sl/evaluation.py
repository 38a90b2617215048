"""Evaluate segmentation models on dataset splits at the labels' resolution.

Images go through the model's own preprocessor (:meth:`Task.predict` on raw
images), exactly as ``model.predict`` and ``keras-sl predict`` run them.
"""

from __future__ import annotations

import numpy as np

from keras_sl.metrics import dice_per_image, iou_per_image
from keras_sl.pqa import correlation


def predict_images(model, images, batch_size: int | None = None):
    """Probability maps ``(H, W, K)`` at each image's own size and Q per image
    (None for models without PQA) for a list of raw images."""
    if hasattr(model, "predict_quality"):
        probs, q = model.predict_quality(list(images), batch_size=batch_size, verbose=0)
        return probs, [float(v) for v in q]
    probs = model.predict(list(images), batch_size=batch_size, verbose=0)
    return probs, [None] * len(probs)


def predict_image(model, image: np.ndarray):
    """Probability map ``(H, W, K)`` of one raw image at its own size, and Q."""
    probs, q = predict_images(model, [image])
    return probs[0], q[0]


def evaluate_segmentation(model, dataset, samples, threshold: float = 0.5, chunk: int = 16) -> dict:
    """Per-image Dice/IoU at the original label size, Q and PQA correlations.

    Returns ``{"dice", "iou", "n", "per_image": [...], "pqa_pearson", ...}``.
    Images are read and predicted ``chunk`` at a time.
    """
    rows = []
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        pairs = [dataset.load(s) for s in part]
        probs, qs = predict_images(model, [image for image, _ in pairs])
        for sample, (_, mask), prob, q in zip(part, pairs, probs, qs):
            d = float(dice_per_image(mask[None], prob[None], threshold=threshold)[0])
            i = float(iou_per_image(mask[None], prob[None], threshold=threshold)[0])
            rows.append({"id": sample.id, "dice": d, "iou": i, "q": q})
    dice = np.array([r["dice"] for r in rows])
    out = {
        "dice": float(dice.mean()) if rows else float("nan"),
        "iou": float(np.mean([r["iou"] for r in rows])) if rows else float("nan"),
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
