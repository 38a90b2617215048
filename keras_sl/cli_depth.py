"""``keras-sl evaluate`` and ``keras-sl predict`` for depth presets.

:mod:`keras_sl.cli` loads the preset and hands over here when the model is a
:class:`keras_sl.tasks.DepthEstimator` or :class:`keras_sl.tasks.SLDepthEstimator`
(:func:`is_depth_model`). Same conventions as the segmentation path: output
paths are checked before any work (by the CLI), metrics are printed before
the JSON file is written, a batch of images goes on past a bad file and
``predictions.json`` is rewritten whole after every image.

* evaluate: :func:`keras_sl.evaluation_depth.evaluate_depth` on the split;
  ``--out`` adds a figure of each of the first :data:`FIGURE_LIMIT` images
  (:func:`keras_sl.visualize_depth.save_depth_figure`) and, for SL models,
  ``pqa_scatter.png`` (Q against the per-image RMSE, every evaluated image).
* predict: ``<stem>_depth.npy`` (float32 metres, ``(H, W)`` at the input's
  size), ``<stem>_depth.png`` (colour-mapped, scale 0..its maximum, recorded
  in ``predictions.json``), ``<stem>_uncertainty.png`` (SL models) and per
  image Q (SL), min / median / max depth. Images are flagged by Q only when
  ``--q-threshold`` is given or the preset's metadata has ``q_threshold``
  (a depth Q has no default threshold).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from keras_sl.cli_errors import EXIT_USAGE, CLIError
from keras_sl.cli_files import json_safe, write_json

#: ``evaluate --out`` draws a figure for at most this many images (the first of the split).
FIGURE_LIMIT = 8

#: Keys every depth evaluation JSON has (``null`` when they cannot be computed:
#: PQA needs an SL model and at least 3 images with a finite Q).
REQUIRED_KEYS = ("rmse", "abs_rel", "delta1", "delta2", "delta3", "pqa_pearson", "pqa_spearman", "n")


def is_depth_model(model) -> bool:
    """Whether ``model`` is a depth task (its 2-D or SL form)."""
    from keras_sl.tasks import DepthEstimator, SLDepthEstimator

    return isinstance(model, (DepthEstimator, SLDepthEstimator))


def check_task(model, dataset, preset: str, reader: str) -> None:
    """A depth model needs a depth reader and a segmentation model a
    segmentation one: else a ``CLIError`` naming both (before any prediction)."""
    depth_model = is_depth_model(model)
    depth_data = getattr(dataset, "task", "segmentation") == "depth"
    if depth_model != depth_data:
        kind = "depth" if depth_model else "segmentation"
        raise CLIError(f"preset {preset} is a {kind} model ({type(model).__name__}) but dataset reader "
                       f"{reader!r} reads {getattr(dataset, 'task', 'segmentation')} data",
                       f"pass --dataset with a {kind} reader (keras_sl.datasets)", EXIT_USAGE)


def _safe_name(text: str) -> str:
    """A sample id as a file name: ``scene/seq-01/frame-000000`` -> ``scene__seq-01__frame-000000``."""
    return re.sub(r"[^\w.-]+", "__", str(text)).strip("_") or "image"


# -- evaluate ------------------------------------------------------------------------------------------------
def evaluate(args, model, dataset, samples, reader: str) -> int:
    """``keras-sl evaluate`` on a depth preset: metrics JSON on stdout (and
    ``--json`` with per-image rows), figures in ``--out``."""
    from keras_sl import evaluation_depth  # looked up at call time (tests stub it)
    from keras_sl.evaluation import cli_prediction_options

    options = cli_prediction_options(args)
    result = evaluation_depth.evaluate_depth(model, dataset, samples, **options)
    summary = {k: v for k, v in result.items() if k not in ("per_image", "outputs")}
    for key in REQUIRED_KEYS:
        summary.setdefault(key, None)
    summary.update(preset=args.preset, dataset=reader, split=args.split, task="depth")
    print(json.dumps(json_safe(summary), indent=2), flush=True)  # first: a failed write loses no metric
    if args.json:
        write_json(args.json, {**summary, "per_image": result["per_image"]})
    if args.out:
        figures(model, dataset, samples, result["per_image"], Path(args.out),
                title=f"{Path(args.preset).name} {reader} {args.split}", options=options)
    return 0


def figures(model, dataset, samples, rows, out: Path, title: str, limit: int | None = None,
            options: dict | None = None) -> list[Path]:
    """``depth_<id>.png`` for the first ``limit`` (:data:`FIGURE_LIMIT`) samples and, for an SL
    model, ``pqa_scatter.png`` (Q vs per-image RMSE of all ``rows``). Without
    matplotlib: one line on stderr, no figure. Returns the files written."""
    import numpy as np

    from keras_sl.evaluation_depth import predict_depth_images
    from keras_sl.visualize_depth import save_depth_figure, save_depth_scatter

    out.mkdir(parents=True, exist_ok=True)
    written = []
    sl = hasattr(model, "predict_slices")
    try:
        if sl and rows:
            written.append(save_depth_scatter(out / "pqa_scatter.png", [r["q"] for r in rows],
                                              [r["rmse"] for r in rows], title=title))
        by_id = {r["id"]: r for r in rows}
        for sample in samples[: FIGURE_LIMIT if limit is None else limit]:
            image, target = dataset.load(sample)
            depth, uncertainty, q = predict_depth_images(model, [image], **(options or {}))
            slices = np.asarray(model.predict_slices([image], verbose=0, **(options or {}))[0]) if sl else None
            row = by_id.get(sample.id, {})
            rmse, delta1 = row.get("rmse", float("nan")), row.get("delta1", float("nan"))
            text = f"{sample.id}: RMSE {rmse:.3f} m, delta1 {delta1:.3f}"
            if q[0] is not None:
                text += f", Q {q[0]:.3f}"
            written.append(save_depth_figure(out / f"depth_{_safe_name(sample.id)}.png", image, target, depth[0],
                                             uncertainty=uncertainty[0], slices=slices,
                                             selected=model.selected_slices if sl else (), title=f"{title}\n{text}"))
    except ImportError as err:
        print(f"keras-sl evaluate: figures skipped: {err}", file=sys.stderr)
    return written


# -- predict -------------------------------------------------------------------------------------------------
def _depth_threshold(args, meta: dict) -> tuple[float | None, str | None]:
    """``--q-threshold``, else the preset's ``q_threshold``, else none (Q is reported, nothing flagged)."""
    if args.q_threshold is not None:
        return args.q_threshold, "--q-threshold"
    if "q_threshold" in meta:
        value = meta["q_threshold"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CLIError(f"preset {args.preset}: metadata.json has q_threshold = {value!r}, not a finite number",
                           "fix the preset's metadata.json, or pass --q-threshold")
        return float(value), "preset metadata.json (q_threshold)"
    return None, None


def _finite_stats(values) -> dict:
    import numpy as np

    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"depth_min": None, "depth_median": None, "depth_max": None}
    return {"depth_min": float(finite.min()), "depth_median": float(np.median(finite)),
            "depth_max": float(finite.max())}


def predict(args, model, todo, batch) -> int:
    """``keras-sl predict`` on a depth preset, for the images ``todo``
    (``(path, stem)`` pairs, existing files); ``batch`` is the
    :class:`keras_sl.cli_files.FileBatch` holding the report (``predictions.json``)
    with the files already failed."""
    state = batch.state
    import numpy as np

    from keras_sl import evaluation_depth  # looked up at call time (tests stub it)
    from keras_sl.datasets.base import Dataset
    from keras_sl.evaluation import cli_prediction_options
    from keras_sl.selective import is_flagged
    from keras_sl.visualize_depth import DEPTH_CMAP, ERROR_CMAP, save_depth_png

    out = Path(args.out)
    options = cli_prediction_options(args)
    threshold, source = _depth_threshold(args, getattr(model, "preset_metadata", {}) or {})
    state.update(task="depth", unit="metres", q_threshold=threshold, q_threshold_source=source,
                 colormaps={"depth": DEPTH_CMAP, "uncertainty": ERROR_CMAP})
    out.mkdir(parents=True, exist_ok=True)
    batch.save()
    for path, stem in todo:
        try:
            image = Dataset.read_image(path)
            depths, uncertainties, qs = evaluation_depth.predict_depth_images(model, [image], **options)
            depth = np.asarray(depths[0], dtype="float32")[..., 0]
            npy, png = out / f"{stem}_depth.npy", out / f"{stem}_depth.png"
            np.save(npy, depth)
            rec = {"image": str(path), "depth": str(npy), "depth_png": str(png), "height": int(depth.shape[0]),
                   "width": int(depth.shape[1]), **_finite_stats(depth)}
            rec["depth_png_scale"] = list(save_depth_png(png, depth, cmap=DEPTH_CMAP))
            if uncertainties[0] is not None:
                uncertainty = np.asarray(uncertainties[0], dtype="float32")[..., 0]
                target = out / f"{stem}_uncertainty.png"
                rec["uncertainty_png_scale"] = list(save_depth_png(target, uncertainty, cmap=ERROR_CMAP))
                rec["uncertainty_png"] = str(target)
                rec["uncertainty_mean"] = float(np.mean(uncertainty))
        except Exception as err:  # noqa: BLE001 - one line per failed file; the batch goes on
            batch.fail(path, err)
        else:
            text = f"{path}: depth {npy}"
            if rec["depth_min"] is not None:
                text += (f" (min {rec['depth_min']:.2f}, median {rec['depth_median']:.2f}, "
                         f"max {rec['depth_max']:.2f} m)")
            nonfinite = int((~np.isfinite(depth)).sum())
            if nonfinite:
                rec["non_finite_pixels"] = nonfinite
                text += f" ({nonfinite} non-finite pixels)"
            q = qs[0]
            if q is not None:
                rec["q"] = q
                text += f", Q={q:.3f}"
                if threshold is not None:
                    flagged = is_flagged(q, threshold)  # a NaN Q is always flagged
                    rec["low_quality"] = flagged
                    text += "  LOW QUALITY" if flagged else ""
                if math.isnan(q):
                    rec["flag_reason"] = "non-finite prediction (Q is NaN)"
                    text += " (non-finite prediction)"
            state["predictions"].append(rec)
            print(text, flush=True)
        batch.save()
    return batch.finish()

