"""Evaluate depth models on dataset splits at the ground truth's resolution.

Images go through the model's own preprocessor (:meth:`Task.predict` on raw
images), exactly as ``model.predict`` and ``keras-sl predict`` run them; the
predicted depth (metres) is compared with the target on its valid pixels
(depth > 0) with :func:`keras_sl.metrics.depth.depth_metrics`.

Example::

    ds = keras_sl.datasets.get("7scenes", "../shared/data/7scenes-redkitchen")
    model = keras_sl.presets.load_preset("sevenscenes_effnetlite0_sl_fastdepth")
    result = evaluate_depth(model, ds, ds.split("test"))
    result["rmse"], result["delta1"], result["pqa_pearson"]
"""

from __future__ import annotations

import numpy as np

from keras_sl.depth_quality import error_correlation
from keras_sl.evaluation import prediction_options
from keras_sl.metrics.depth import depth_metrics

#: Metrics every depth evaluation reports (means over images with a valid pixel).
DEPTH_SUMMARY = ("rmse", "mae", "abs_rel", "sq_rel", "log10", "rmse_log", "delta1", "delta2", "delta3")


def predict_depth_images(model, images, batch_size: int | None = None, window=None, tta: str | None = None):
    """Depth maps ``(H, W, 1)`` at each image's size, per-pixel uncertainty
    maps and Q per image (None and None for a 2-D model) of a list of raw
    images; ``window`` / ``tta`` as in :meth:`keras_sl.tasks.task.Task.predict`."""
    options = prediction_options(window, tta)
    if hasattr(model, "predict_uncertainty"):
        depth, uncertainty, q = model.predict_uncertainty(list(images), batch_size=batch_size, verbose=0, **options)
        return depth, uncertainty, [float(v) for v in q]
    depth = model.predict(list(images), batch_size=batch_size, verbose=0, **options)
    return depth, [None] * len(depth), [None] * len(depth)


def evaluate_depth(model, dataset, samples, chunk: int = 16, keep_outputs: bool = False, window=None,
                   tta: str | None = None) -> dict:
    """Depth metrics of ``model`` on ``samples`` of a depth ``dataset``.

    Returns the means of :data:`DEPTH_SUMMARY` over the ``n`` images with a
    valid pixel, ``n``, ``per_image`` rows (``id``, each metric, ``q``,
    ``valid_pixels``) and, for an SL model, ``q_mean``, ``pqa_pearson`` /
    ``pqa_spearman`` (and p-values): the correlation of Q with the per-image
    RMSE — NEGATIVE when Q is useful (high Q, low error) — plus
    ``pqa_pearson_abs_rel`` / ``pqa_pearson_delta1`` and the mean per-pixel
    uncertainty ``uncertainty_mean`` (metres). ``keep_outputs`` adds
    ``outputs``: per image ``(image, target, depth, uncertainty)`` for figures.
    ``window`` / ``tta``: as in :func:`predict_depth_images` (default: the
    model's preprocessor decides, no TTA).
    """
    rows, outputs = [], []
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        pairs = [dataset.load(s) for s in part]
        depths, uncertainties, qs = predict_depth_images(model, [image for image, _ in pairs],
                                                         **prediction_options(window, tta))
        result = depth_metrics([d for d in depths], [t for _, t in pairs])
        for j, sample in enumerate(part):
            row = {"id": sample.id, **{k: float(result["per_image"][k][j]) for k in DEPTH_SUMMARY},
                   "valid_pixels": int(result["valid_pixels"][j]), "q": qs[j]}
            if uncertainties[j] is not None:
                valid = np.asarray(pairs[j][1])[..., 0] > 0
                row["uncertainty_mean"] = float(np.asarray(uncertainties[j])[..., 0][valid].mean()) if valid.any() \
                    else float("nan")
            rows.append(row)
            if keep_outputs:
                outputs.append((pairs[j][0], pairs[j][1], depths[j], uncertainties[j]))
    scored = [r for r in rows if r["valid_pixels"] > 0]
    out = {k: float(np.mean([r[k] for r in scored])) if scored else float("nan") for k in DEPTH_SUMMARY}
    out.update(n=len(scored), n_images=len(rows), per_image=rows)
    if keep_outputs:
        out["outputs"] = outputs
    if not scored or scored[0]["q"] is None:
        return out
    q = np.array([r["q"] for r in scored], dtype="float64")
    out["q_mean"] = float(np.nanmean(q))
    out["uncertainty_mean"] = float(np.nanmean([r["uncertainty_mean"] for r in scored]))
    if np.isfinite(q).sum() >= 3:
        for metric, key in (("rmse", ""), ("abs_rel", "_abs_rel"), ("delta1", "_delta1")):
            corr = error_correlation(q, np.array([r[metric] for r in scored]), metric=metric)
            out[f"pqa_pearson{key}"] = corr["pearson_r"]
            out[f"pqa_spearman{key}"] = corr["spearman_rho"]
            if not key:
                out["pqa_p_value"] = corr["pearson_p"]
                out["pqa_spearman_p_value"] = corr["spearman_p"]
    return out
