"""Evaluate segmentation models on dataset splits at the labels' resolution.

Images go through the model's own preprocessor (:meth:`Task.predict` on raw
images), exactly as ``model.predict`` and ``keras-sl predict`` run them.
"""

from __future__ import annotations

import numpy as np

from keras_sl.metrics import (
    REGION_METRIC_NAMES,
    PooledRegionMetrics,
    dice_per_image,
    iou_per_image,
    region_metrics,
)
from keras_sl.pqa import correlation
from keras_sl.selective import selective_summary


def prediction_options(window=None, tta=None) -> dict:
    """The ``predict`` keywords to pass: only those given (None: the model's
    preprocessor decides, no TTA), so models and stubs without them still work.

    Example:
    >>> prediction_options(), prediction_options(window=False, tta="flips")
    ({}, {'window': False, 'tta': 'flips'})
    """
    return {k: v for k, v in (("window", window), ("tta", tta)) if v is not None}


def cli_prediction_options(args) -> dict:
    """``--window`` / ``--tta`` of ``keras-sl evaluate`` and ``predict`` (absent: None) as
    :func:`prediction_options`; a bad ``--window`` is the CLI's usage error.

    Example:
    >>> from argparse import Namespace
    >>> cli_prediction_options(Namespace(window="512x512", tta="flips")), cli_prediction_options(Namespace())
    ({'window': (512, 512), 'tta': 'flips'}, {})
    """
    from keras_sl.cli_errors import EXIT_USAGE, CLIError
    from keras_sl.inference.sliding_window import parse_window_option

    window = getattr(args, "window", None)
    if window is not None:
        try:
            window = parse_window_option(window)
        except ValueError as err:
            raise CLIError(str(err), "pass --window auto, resize, window, N or HxW (e.g. 512x512)",
                           EXIT_USAGE) from None
    return prediction_options(window, getattr(args, "tta", None))


def predict_images(model, images, batch_size: int | None = None, window=None, tta: str | None = None):
    """Probability maps ``(H, W, K)`` at each image's own size and Q per image
    (None for models without PQA) for a list of raw images. ``window`` and
    ``tta`` as in :meth:`keras_sl.tasks.task.Task.predict` (default: as the
    model's preprocessor says, no TTA)."""
    options = prediction_options(window, tta)
    if hasattr(model, "predict_quality"):
        probs, q = model.predict_quality(list(images), batch_size=batch_size, verbose=0, **options)
        return probs, [float(v) for v in q]
    probs = model.predict(list(images), batch_size=batch_size, verbose=0, **options)
    return probs, [None] * len(probs)


def predict_image(model, image: np.ndarray, window=None, tta: str | None = None):
    """Probability map ``(H, W, K)`` of one raw image at its own size, and Q."""
    probs, q = predict_images(model, [image], window=window, tta=tta)
    return probs[0], q[0]


def evaluate_segmentation(model, dataset, samples, threshold: float = 0.5, chunk: int = 16, window=None,
                          tta: str | None = None, region: str | None = "auto") -> dict:
    """Per-image Dice/IoU at the original label size, Q, PQA correlations and
    selective prediction by Q.

    Returns ``{"dice", "iou", "n", "per_image": [...], ...}``; for a model
    with PQA also ``pqa_pearson``, ``pqa_spearman`` and their p-values (over
    the images with a finite Q, at least 3) and the risk–coverage figures of
    ranking the images by Q (:func:`keras_sl.selective.selective_summary`):
    ``aurc``, ``aurc_random``, ``aurc_oracle``, ``eaurc``,
    ``dice_at_coverage`` (``{"0.8": ..., "0.9": ...}``) and ``q_nonfinite``
    (images whose Q is NaN: a non-finite prediction, ranked last).
    Images are read and predicted ``chunk`` at a time, by windows or not as
    the model's preprocessor says unless ``window`` overrides it, with
    ``tta="flips"`` averaged over flips (:meth:`keras_sl.tasks.task.Task.predict`).

    A dataset with a ``region_of_interest`` (DRIVE's field of view; ``region``
    ``"auto"`` takes the dataset's, None scores whole images) is scored on
    the pixels inside it, as vessel papers do: per image ``dice``, ``iou``,
    ``auc``, ``sensitivity``, ``specificity``, ``accuracy``
    (:func:`keras_sl.metrics.region_metrics`), their means at the top level,
    ``region`` (its name) and ``pooled`` (the same metrics over every
    region pixel of the split, :class:`keras_sl.metrics.PooledRegionMetrics`).
    """
    if region == "auto":
        region = getattr(dataset, "region_of_interest", None)
    pooled = PooledRegionMetrics(threshold) if region else None
    rows = []
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        pairs = [dataset.load(s) for s in part]
        probs, qs = predict_images(model, [image for image, _ in pairs], **prediction_options(window, tta))
        for sample, (_, mask), prob, q in zip(part, pairs, probs, qs):
            if region:
                roi = dataset.read_region(sample, region)
                if roi is None:
                    raise ValueError(f"Sample {sample.id!r} of {type(dataset).__name__} has no {region!r} mask; put "
                                     "the dataset's masks back in its layout, or pass region=None to score whole "
                                     "images.")
                scores = region_metrics(mask, prob, roi, threshold)
                pooled.add(mask, prob, roi)
                rows.append({"id": sample.id, **{k: scores[k] for k in REGION_METRIC_NAMES}, "q": q})
                continue
            d = float(dice_per_image(mask[None], prob[None], threshold=threshold)[0])
            i = float(iou_per_image(mask[None], prob[None], threshold=threshold)[0])
            rows.append({"id": sample.id, "dice": d, "iou": i, "q": q})
    dice = np.array([r["dice"] for r in rows])
    names = REGION_METRIC_NAMES if region else ("dice", "iou")
    out = {name: float(np.mean([r[name] for r in rows])) if rows else float("nan") for name in names}
    out["n"] = len(rows)
    if region:
        out.update(region=region, pooled=pooled.result())
    out["per_image"] = rows
    if not rows or rows[0]["q"] is None:
        return out
    q = np.array([r["q"] for r in rows], dtype="float64")
    finite = np.isfinite(q)
    if finite.sum() >= 3:
        corr = correlation(q[finite], dice[finite])
        out.update(
            pqa_pearson=corr["pearson_r"], pqa_spearman=corr["spearman_rho"],
            pqa_p_value=corr["pearson_p"], pqa_spearman_p_value=corr["spearman_p"],
        )
    if np.all(np.isfinite(dice)):
        out.update(selective_summary(q, dice))
    return out
