"""Depth-estimation metrics: per-image NumPy evaluation and Keras metrics for ``fit``.

Definitions (the standard ones of monocular depth evaluation, as FastDepth's
and MiDaS' evaluation code use them). For one image, with ``t`` the target and
``p`` the prediction on its ``n`` valid pixels:

=============  ===================================================
``rmse``       ``sqrt(mean((p - t)^2))``
``mae``        ``mean(|p - t|)``
``abs_rel``    ``mean(|p - t| / t)``
``sq_rel``     ``mean((p - t)^2 / t)``
``log10``      ``mean(|log10 p - log10 t|)``
``rmse_log``   ``sqrt(mean((ln p - ln t)^2))``
``delta<k>``   ``mean(max(p / t, t / p) < 1.25^k)``, k = 1, 2, 3
=============  ===================================================

**Valid pixels**: target finite and ``> 0`` (keras_sl's depth readers store
every invalid pixel as exactly 0, :mod:`keras_sl.datasets.depth`), and,
when given, ``min_depth <= t <= max_depth`` (inclusive, as
:func:`keras_sl.datasets.depth.sanitize_depth` keeps ``t == max_depth``).

**Predictions** are clipped to ``[lo, max_depth]`` before scoring, with
``lo = max(eps, min_depth)`` (``eps = 1e-3``, i.e. 1 mm for targets in
metres; the upper cap only when ``max_depth`` is given) — the usual protocol
(Eigen / monodepth / BTS clip to the evaluation range). A prediction ``<= 0``
therefore scores as ``eps``: finite, but heavily penalised by ``abs_rel``,
``log10``, ``rmse_log`` and the δ accuracies. A **non-finite** prediction on
a valid pixel is never clipped or hidden: that image's metrics are NaN.

**Averaging**: every metric is computed per image and averaged over images
(FastDepth evaluates one image at a time and averages; so does MiDaS' NYU /
KITTI evaluation), so ``rmse`` is the mean of per-image RMSEs, not the RMSE
of all pixels. Images without a valid pixel have NaN metrics and are left out
of the means (they are counted); images with a non-finite prediction are
kept, so the mean is NaN and ``n_nonfinite`` says how many.

**Median scaling** (optional, for cross-camera / scale-ambiguous tests, as
in monocular SfM evaluation): per image, after the lower clip,
``p *= median(t) / median(p)`` over its valid pixels, then the clip again.
(MiDaS' zero-shot protocol instead fits a scale and a shift in inverse
depth by least squares; that alignment is not provided here.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_sl.utils.layout import standardize_data_format

#: Names of the metrics :func:`depth_errors` / :func:`depth_metrics` return, in order.
DEPTH_METRIC_NAMES = ("rmse", "mae", "abs_rel", "sq_rel", "log10", "rmse_log", "delta1", "delta2", "delta3")
#: Base of the δ thresholds (``max(p/t, t/p) < DELTA_BASE ** k``).
DELTA_BASE = 1.25
#: Default lower clip of predictions (metres): 1 mm.
DEFAULT_EPS = 1e-3


def _check_range(eps: float, min_depth: float | None, max_depth: float | None) -> tuple[float, float]:
    """``(lo, hi)`` prediction clip range, after validating the arguments."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (the lower clip of predictions), got {eps}.")
    if min_depth is not None and max_depth is not None and not min_depth < max_depth:
        raise ValueError(f"min_depth must be below max_depth, got {min_depth} and {max_depth}.")
    lo = float(eps) if min_depth is None else max(float(eps), float(min_depth))
    hi = math.inf if max_depth is None else float(max_depth)
    if not lo < hi:
        raise ValueError(f"The prediction clip range [{lo}, {hi}] is empty: lower eps or raise max_depth.")
    return lo, hi


def _squeezed_shape(shape) -> tuple[int, ...]:
    return tuple(int(s) for s in shape if s != 1)


def _as_image_pair(pred, target, index) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype="float64")
    t = np.asarray(target, dtype="float64")
    if _squeezed_shape(p.shape) != _squeezed_shape(t.shape):
        where = "" if index is None else f" (image {index})"
        raise ValueError(
            f"Prediction and target shapes differ{where}: {p.shape} and {t.shape}. Depth metrics take the final "
            "prediction of each image (the mean of the selected slices for an SL model), not the per-slice "
            "outputs, at the target's size."
        )
    return p.reshape(-1), t.reshape(-1)


def valid_mask(target, min_depth: float | None = None, max_depth: float | None = None) -> np.ndarray:
    """Boolean mask of valid target pixels: finite, ``> 0``, within the optional caps.

    Example:
    >>> valid_mask(np.array([0.0, 0.5, 2.0, np.nan, 9.0]), max_depth=5.0).tolist()
    [False, True, True, False, False]
    """
    t = np.asarray(target, dtype="float64")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(t) & (t > 0)
        if min_depth is not None:
            valid &= t >= min_depth
        if max_depth is not None:
            valid &= t <= max_depth
    return valid


def _errors(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    diff = p - t
    sq = diff * diff
    ratio = np.maximum(p / t, t / p)
    out = {
        "rmse": math.sqrt(sq.mean()),
        "mae": float(np.abs(diff).mean()),
        "abs_rel": float((np.abs(diff) / t).mean()),
        "sq_rel": float((sq / t).mean()),
        "log10": float(np.abs(np.log10(p) - np.log10(t)).mean()),
        "rmse_log": math.sqrt(float(((np.log(p) - np.log(t)) ** 2).mean())),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = float((ratio < DELTA_BASE**k).mean())
    return out


def _image_errors(pred, target, min_depth, max_depth, eps, median_scaling, index=None):
    """``(metrics, valid pixel count, finite prediction?, scale)`` of one image."""
    lo, hi = _check_range(eps, min_depth, max_depth)
    p, t = _as_image_pair(pred, target, index)
    valid = valid_mask(t, min_depth, max_depth)
    n = int(np.count_nonzero(valid))
    nan_metrics = {name: math.nan for name in DEPTH_METRIC_NAMES}
    if n == 0:
        return nan_metrics, 0, True, math.nan
    p, t = p[valid], t[valid]
    if not np.isfinite(p).all():
        return nan_metrics, n, False, math.nan
    p = np.maximum(p, lo)
    scale = 1.0
    if median_scaling:
        scale = float(np.median(t) / np.median(p))
        p = p * scale
    p = np.clip(p, lo, hi)
    return _errors(p, t), n, True, scale


def depth_errors(
    pred,
    target,
    min_depth: float | None = None,
    max_depth: float | None = None,
    eps: float = DEFAULT_EPS,
    median_scaling: bool = False,
) -> dict[str, float]:
    """Depth metrics of ONE image (``pred`` and ``target`` of the same shape,
    size-1 axes aside); see the module docstring for the definitions.

    Returns a dict ``{name: float}`` over :data:`DEPTH_METRIC_NAMES`, all NaN
    when the image has no valid pixel or a non-finite prediction on one.

    Example:
    >>> t = np.array([[1.0, 2.0], [4.0, 0.0]])   # the 0 is invalid
    >>> p = np.array([[1.0, 2.4], [3.0, 7.0]])
    >>> e = depth_errors(p, t)
    >>> round(e["mae"], 4), round(e["abs_rel"], 4), round(e["delta1"], 4)
    (0.4667, 0.15, 0.6667)
    """
    return _image_errors(pred, target, min_depth, max_depth, eps, median_scaling)[0]


def depth_metrics(
    pred,
    target,
    min_depth: float | None = None,
    max_depth: float | None = None,
    eps: float = DEFAULT_EPS,
    median_scaling: bool = False,
) -> dict:
    """Per-image depth metrics of a batch, and their means over images.

    Args:
        pred: predictions ``(B, ...)`` (e.g. ``(B, H, W, 1)`` metres), or a
            sequence of per-image arrays (images may differ in size).
        target: targets of the same layout; invalid pixels 0 (or non-finite).
        min_depth, max_depth: optional target caps (pixels outside are
            invalid) that also bound the prediction clip.
        eps: lower clip of predictions (default 1e-3 = 1 mm in metres).
        median_scaling: per image, scale the prediction by
            ``median(t) / median(p)`` over its valid pixels first.

    Returns:
        A dict with ``per_image`` (``{name: float64 array (B,)}``), ``mean``
        (``{name: float}`` over the ``n`` images with a valid pixel; NaN if
        one of them has a non-finite prediction, or if ``n == 0``), ``n``,
        ``n_images``, ``n_empty`` (images without a valid pixel, NaN metrics,
        not in the means), ``n_nonfinite`` (images with a non-finite
        prediction on a valid pixel, NaN metrics, in the means),
        ``valid_pixels`` (int array ``(B,)``) and ``scale`` (the median-scaling
        factor per image; 1.0 without it, NaN for images not scored).

    Example:
    >>> t = np.array([[[1.0, 2.0]], [[0.0, 0.0]]])   # the second image has no valid pixel
    >>> p = np.array([[[1.5, 2.0]], [[1.0, 1.0]]])
    >>> r = depth_metrics(p, t)
    >>> r["per_image"]["mae"].tolist(), r["mean"]["mae"], r["n"], r["n_empty"]
    ([0.25, nan], 0.25, 1, 1)
    """
    if isinstance(pred, np.ndarray) or not isinstance(pred, Sequence):
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.ndim == 0 or target.ndim == 0 or pred.shape[0] != target.shape[0]:
            raise ValueError(f"pred and target need the same batch size, got shapes {pred.shape} and {target.shape}.")
    elif len(pred) != len(target):
        raise ValueError(f"pred and target have different lengths: {len(pred)} and {len(target)} images.")
    n_images = len(pred)
    per_image = {name: np.full(n_images, np.nan) for name in DEPTH_METRIC_NAMES}
    valid_pixels = np.zeros(n_images, dtype="int64")
    finite = np.ones(n_images, dtype=bool)
    scale = np.full(n_images, np.nan)
    for i in range(n_images):
        errors, valid_pixels[i], finite[i], scale[i] = _image_errors(
            pred[i], target[i], min_depth, max_depth, eps, median_scaling, index=i
        )
        for name, value in errors.items():
            per_image[name][i] = value
    scored = valid_pixels > 0
    n = int(np.count_nonzero(scored))
    mean = {
        name: float(values[scored].mean()) if n else math.nan for name, values in per_image.items()
    }
    return {
        "per_image": per_image,
        "mean": mean,
        "n": n,
        "n_images": n_images,
        "n_empty": int(n_images - n),
        "n_nonfinite": int(np.count_nonzero(scored & ~finite)),
        "valid_pixels": valid_pixels,
        "scale": scale,
    }


# ---------------------------------------------------------------------------
# Keras metrics (keras.ops, any backend, inside compiled train/eval steps)
# ---------------------------------------------------------------------------
def _per_image_ops(y_true, y_pred, kind: str, power: float, min_depth, max_depth, eps):
    """``(values (B,), valid pixel counts (B,))`` of one metric, in keras.ops.

    Same masking, clipping and NaN rule as :func:`depth_metrics` (float32)."""
    lo, hi = _check_range(eps, min_depth, max_depth)
    batch = ops.shape(y_pred)[0]
    t = ops.reshape(ops.cast(y_true, "float32"), (batch, -1))
    p = ops.reshape(ops.cast(y_pred, "float32"), (batch, -1))
    valid = ops.logical_and(ops.isfinite(t), t > 0)
    if min_depth is not None:
        valid = ops.logical_and(valid, t >= min_depth)
    if max_depth is not None:
        valid = ops.logical_and(valid, t <= max_depth)
    w = ops.cast(valid, "float32")
    count = ops.sum(w, axis=1)
    # Non-finite predictions on valid pixels make the image NaN (never clipped away).
    bad = ops.sum(ops.cast(ops.logical_and(valid, ops.logical_not(ops.isfinite(p))), "float32"), axis=1)
    t = ops.where(valid, t, ops.ones_like(t))
    p = ops.where(valid, p, ops.ones_like(p))  # also drops NaN/Inf of invalid pixels
    p = ops.clip(p, lo, hi) if math.isfinite(hi) else ops.maximum(p, lo)
    diff = p - t
    if kind in ("rmse", "sq_rel"):
        err = ops.square(diff) / (t if kind == "sq_rel" else 1.0)
    elif kind in ("mae", "abs_rel"):
        err = ops.abs(diff) / (t if kind == "abs_rel" else 1.0)
    elif kind == "log10":
        err = ops.abs(ops.log(p) - ops.log(t)) / math.log(10.0)
    elif kind == "rmse_log":
        err = ops.square(ops.log(p) - ops.log(t))
    elif kind == "delta":
        ratio = ops.maximum(p / t, t / p)
        err = ops.cast(ratio < DELTA_BASE**power, "float32")
    else:
        raise ValueError(f"Unknown depth metric {kind!r}.")
    value = ops.sum(err * w, axis=1) / ops.maximum(count, 1.0)
    if kind in ("rmse", "rmse_log"):
        value = ops.sqrt(value)
    value = ops.where(bad > 0, ops.full_like(value, float("nan")), value)
    return value, count


class _PerImageDepthMetric(keras.metrics.Metric):
    kind = "rmse"
    default_name = "rmse"

    def __init__(
        self,
        min_depth: float | None = None,
        max_depth: float | None = None,
        eps: float = DEFAULT_EPS,
        from_slices: bool = False,
        data_format: str | None = None,
        name=None,
        dtype=None,
    ):
        super().__init__(name=name or self.default_name, dtype=dtype)
        _check_range(eps, min_depth, max_depth)
        self.min_depth = None if min_depth is None else float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        self.eps = float(eps)
        self.from_slices = bool(from_slices)
        self.data_format = standardize_data_format(data_format)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def _power(self) -> float:
        return 1.0

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        if self.from_slices:
            # Training monitor for SL models: the mean over ALL slices.
            y_pred = ops.mean(y_pred, axis=1 if self.data_format == "channels_last" else 2)
        t_size, p_size = y_true.shape[1:], y_pred.shape[1:]
        if None not in t_size and None not in p_size and math.prod(t_size) != math.prod(p_size):
            raise ValueError(
                f"{type(self).__name__} got y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)}: it scores "
                "the final depth map (the mean of the selected slices for an SL model). For per-slice outputs "
                "(B, m, ...) during fit pass from_slices=True (a monitor on the mean of all slices)."
            )
        values, count = _per_image_ops(
            y_true, y_pred, self.kind, self._power(), self.min_depth, self.max_depth, self.eps
        )
        scored = ops.cast(count > 0, "float32")
        if sample_weight is not None:
            scored = scored * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        # Unscored images (no valid pixel) add 0, never their NaN-free placeholder.
        contrib = ops.where(scored > 0, values * scored, ops.zeros_like(values))
        self.total.assign_add(ops.sum(contrib))
        self.count.assign_add(ops.sum(scored))

    def result(self):
        total = ops.convert_to_tensor(self.total)
        count = ops.convert_to_tensor(self.count)
        return ops.where(count > 0, total / ops.maximum(count, 1e-12), ops.full_like(total, float("nan")))

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {
            "min_depth": self.min_depth,
            "max_depth": self.max_depth,
            "eps": self.eps,
            "from_slices": self.from_slices,
            "data_format": self.data_format,
            "name": self.name,
            "dtype": self.dtype,
        }


_KERAS_DOC = """Mean per-image {what} over images with a valid pixel (Keras metric for ``fit``).

    Same definition, masking (target finite and ``> 0``, optional caps),
    prediction clip ``[max(eps, min_depth), max_depth]`` and NaN rule as
    :func:`keras_sl.metrics.depth.depth_metrics` (without median scaling), so
    after a pass over a data set it equals that function's ``mean``. Each
    image counts once (``sample_weight``: one weight per image); images
    without a valid pixel are skipped; the result is NaN before any scored
    image. ``y_pred`` is the final depth map ``(B, ...)`` of the target's
    layout — for an SL model, the mean of the selected slices that
    ``predict`` returns. ``from_slices=True`` instead accepts per-slice
    outputs ``(B, m, ...)`` (``(B, C, m, ...)`` channels_first) and scores
    the mean of ALL slices: a cheap training monitor, not the eq. 9
    prediction.
"""


@keras.saving.register_keras_serializable(package="keras_sl")
class DepthRMSE(_PerImageDepthMetric):
    kind = "rmse"
    default_name = "rmse"
    __doc__ = _KERAS_DOC.format(what="RMSE ``sqrt(mean((p - t)^2))``") + """
    Example:
    >>> import numpy as np
    >>> m = DepthRMSE()
    >>> m.update_state(np.array([[1.0, 2.0, 0.0]]), np.array([[1.0, 4.0, 5.0]]))
    >>> round(float(m.result()), 4)
    1.4142
    """


@keras.saving.register_keras_serializable(package="keras_sl")
class DepthMAE(_PerImageDepthMetric):
    kind = "mae"
    default_name = "mae"
    __doc__ = _KERAS_DOC.format(what="MAE ``mean(|p - t|)``")


@keras.saving.register_keras_serializable(package="keras_sl")
class AbsRel(_PerImageDepthMetric):
    kind = "abs_rel"
    default_name = "abs_rel"
    __doc__ = _KERAS_DOC.format(what="absolute relative error ``mean(|p - t| / t)``") + """
    Example:
    >>> import numpy as np
    >>> m = AbsRel()
    >>> m.update_state(np.array([[1.0, 2.0, 0.0]]), np.array([[1.5, 2.0, 5.0]]))
    >>> float(m.result())
    0.25
    """


@keras.saving.register_keras_serializable(package="keras_sl")
class SqRel(_PerImageDepthMetric):
    kind = "sq_rel"
    default_name = "sq_rel"
    __doc__ = _KERAS_DOC.format(what="squared relative error ``mean((p - t)^2 / t)``")


@keras.saving.register_keras_serializable(package="keras_sl")
class Log10(_PerImageDepthMetric):
    kind = "log10"
    default_name = "log10"
    __doc__ = _KERAS_DOC.format(what="``mean(|log10 p - log10 t|)``")


@keras.saving.register_keras_serializable(package="keras_sl")
class RMSELog(_PerImageDepthMetric):
    kind = "rmse_log"
    default_name = "rmse_log"
    __doc__ = _KERAS_DOC.format(what="``sqrt(mean((ln p - ln t)^2))``")


@keras.saving.register_keras_serializable(package="keras_sl")
class Delta1(_PerImageDepthMetric):
    kind = "delta"
    default_name = "delta1"
    __doc__ = _KERAS_DOC.format(what="δ accuracy ``mean(max(p/t, t/p) < 1.25^power)``") + """
    ``power`` (default 1) gives δ1, δ2 (``power=2``) or δ3 (``power=3``);
    the default name follows it (``"delta2"``, ...).

    Example:
    >>> import numpy as np
    >>> m = Delta1()
    >>> m.update_state(np.array([[1.0, 2.0, 4.0, 0.0]]), np.array([[1.2, 2.6, 4.0, 9.0]]))
    >>> round(float(m.result()), 4), Delta1(power=3).name
    (0.6667, 'delta3')
    """

    def __init__(self, power: float = 1, min_depth=None, max_depth=None, eps: float = DEFAULT_EPS,
                 from_slices: bool = False, data_format=None, name=None, dtype=None):
        power = int(power) if float(power).is_integer() else float(power)
        if not power > 0:
            raise ValueError(f"power must be > 0, got {power}.")
        self.power = power
        super().__init__(min_depth=min_depth, max_depth=max_depth, eps=eps, from_slices=from_slices,
                         data_format=data_format, name=name or f"delta{power}", dtype=dtype)

    def _power(self) -> float:
        return float(self.power)

    def get_config(self):
        return {"power": self.power, **super().get_config()}
