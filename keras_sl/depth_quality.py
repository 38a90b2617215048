"""Depth prediction quality (PQA) and per-pixel uncertainty from SL slices.

The regression analogue of the paper's eq. 11 (:mod:`keras_sl.pqa`). An SL
depth network outputs ``m`` depth maps ``d_1..d_m`` (one per slice); the
prediction is the mean of the ``s`` selected slices ``S``. Everything here
comes from that one forward pass, at no extra network cost.

**Per-pixel disagreement** (``disagreement``), with every slice depth first
clipped to ``eps`` (default 1e-3, i.e. 1 mm in metres) so that ``d > 0``::

    D(x) = 1 / (s (m - s)) * sum_{i in S} sum_{j not in S} |d_i(x) - d_j(x)| / (d_i(x) + d_j(x))

**Quality** (``quality``): ``Q = 1 - mean_x D(x)``, the mean over all pixels
(no ground truth is needed or used) and over the ``s (m - s)`` pairs of
selected / unselected slices.

Why this definition:

* It is eq. 11 with Dice replaced by the Dice of two depth values:
  ``1 - |a - b| / (a + b) = 2 min(a, b) / (a + b)`` is the (fuzzy) Dice of
  ``a`` and ``b``, so Q averages a per-pixel Dice over the same pairs as eq. 11.
* Bounded: ``D`` is in ``[0, 1)``, so ``Q`` is in ``(0, 1]``; higher = more
  confident. ``Q = 1`` iff every selected slice equals every unselected one.
* Scale-aware, i.e. relative: multiplying every slice by ``c > 0`` leaves
  ``Q`` unchanged (up to the ``eps`` clip), so 10 cm of disagreement at 1 m
  weighs as much as 1 m at 10 m — as AbsRel and δ do. It is monotone in the
  ratio the δ accuracies use: with ``rho = max(a/b, b/a)``,
  ``|a - b| / (a + b) = (rho - 1) / (rho + 1)`` (``rho < 1.25`` ⇔ ``< 1/9``).
* A slice predicting ``<= 0`` (possible with a linear head early in training)
  counts as ``eps``: near-maximal disagreement with any positive depth.
* Non-finite outputs are never called good: an image with a NaN / Inf slice
  value gets ``Q = NaN`` (as :func:`keras_sl.pqa.quality` does), and ``D`` is
  NaN at such pixels.

**Uncertainty** (``slice_statistics``): the population standard deviation of
the depths across the selected slices (``spread="selected"``, the default:
the spread of exactly the ensemble whose mean is the prediction; needs
``s >= 2``) or across all ``m`` slices (``spread="all"``), in the depth unit
(metres), or divided by the mean of the same slices (``relative=True``, a
coefficient of variation; the mean is clipped to ``eps``).

**Correlation with the error**: a good depth Q is HIGH where the error is LOW,
so ``correlation(Q, RMSE)`` is expected to be NEGATIVE (and positive against
δ1). :func:`error_correlation` reports the correlation with the chosen
per-image metric with its sign as is, plus the sign a useful Q should have.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from keras import ops

from keras_sl.metrics.depth import DEFAULT_EPS

#: Per-image metrics where lower is better (a good Q correlates negatively with them).
ERROR_METRICS = ("rmse", "mae", "abs_rel", "sq_rel", "log10", "rmse_log")


def _num_selected(selected) -> int:
    shape = getattr(selected, "shape", None)
    if shape is not None and len(shape) == 1 and shape[0] is not None:
        return int(shape[0])
    return int(np.asarray(selected).reshape(-1).size)


def _prepare(slice_depths, selected, slice_axis: int):
    """``(slices (B, m, ...) float32, m, s, selected indices, is_selected (m,))``, validated.

    Moving the slice axis to 1 and reducing it leaves the other axes in their
    original order, so outputs need no axis restored."""
    x = ops.convert_to_tensor(slice_depths)
    nd = len(x.shape)
    axis = slice_axis % nd if -nd <= slice_axis < nd else None
    if axis is None or axis == 0:
        raise ValueError(f"slice_axis={slice_axis} must name a non-batch axis of the {nd}-D slice depths.")
    if axis != 1:
        x = ops.moveaxis(x, axis, 1)
    m = x.shape[1]
    if m is None:
        raise ValueError("The number of slices (the slice axis' length) must be static.")
    s = _num_selected(selected)
    if isinstance(selected, (list, tuple, np.ndarray)):
        idx = [int(i) for i in np.asarray(selected).reshape(-1)]
        if len(set(idx)) != len(idx) or not all(0 <= i < m for i in idx):
            raise ValueError(f"selected must hold distinct slice indices in [0, {m}), got {idx}.")
        selected = np.asarray(idx, dtype="int32")
    if not 1 <= s <= m:
        raise ValueError(f"Between 1 and {m} slices must be selected, got {s}.")
    sel_idx = ops.convert_to_tensor(selected, "int32")
    is_sel = ops.minimum(ops.sum(ops.one_hot(sel_idx, m), axis=0), 1.0)
    return ops.cast(x, "float32"), m, s, sel_idx, is_sel


def _finite_per_pixel(x):
    """1.0 where every slice is finite at a pixel, else 0.0: ``(B, ...)``."""
    return ops.min(ops.cast(ops.abs(x) < float("inf"), "float32"), axis=1)


def _disagreement(x, m, s, sel_idx, is_sel, eps):
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (slice depths are clipped to it), got {eps}.")
    if s >= m:
        raise ValueError("Depth PQA needs at least one unselected slice (num_selected < depth).")
    d = ops.maximum(x, eps)
    picked = ops.take(d, sel_idx, axis=1)  # (B, s, ...)
    unsel_w = ops.reshape(1.0 - is_sel, (1, m) + (1,) * (len(x.shape) - 2))
    acc = None
    for i in range(s):  # s is small and static: memory O(B m P), not O(B s m P)
        a = ops.expand_dims(picked[:, i], 1)
        term = ops.sum(ops.abs(a - d) / (a + d) * unsel_w, axis=1)
        acc = term if acc is None else acc + term
    disagreement = acc / float(s * (m - s))
    # NaN where a slice is NaN/Inf. Arithmetic, not ops.where (as keras_sl.pqa).
    finite = _finite_per_pixel(x)
    return disagreement * finite / finite


def disagreement(slice_depths, selected: Sequence[int], slice_axis: int = 1, eps: float = DEFAULT_EPS):
    """Per-pixel selected-vs-unselected disagreement ``D`` in ``[0, 1)`` (module docstring).

    Args:
        slice_depths: per-slice depths, e.g. ``(B, m, H, W, 1)`` (``slice_axis=1``,
            channels_last) or ``(B, 1, m, H, W)`` (``slice_axis=2``).
        selected: indices of the ``s < m`` selected slices (a list or an int
            tensor / variable such as ``SliceHead.selected``).
        slice_axis: the lifted axis of ``slice_depths``.
        eps: depths are clipped to ``>= eps`` first.

    Returns:
        ``slice_depths``' shape without the slice axis; NaN where any slice
        is not finite.

    Example:
    >>> import numpy as np, keras
    >>> d = np.ones((1, 4, 2, 2, 1), "float32"); d[:, 3] = 3.0   # slice 3 says 3 m, the others 1 m
    >>> keras.ops.convert_to_numpy(disagreement(d, [0, 1]))[0, ..., 0].tolist()   # 2 pairs agree, 2 give 0.5
    [[0.25, 0.25], [0.25, 0.25]]
    """
    x, m, s, sel_idx, is_sel = _prepare(slice_depths, selected, slice_axis)
    return _disagreement(x, m, s, sel_idx, is_sel, float(eps))


def quality(slice_depths, selected: Sequence[int], slice_axis: int = 1, eps: float = DEFAULT_EPS):
    """Per-image depth PQA score ``Q = 1 - mean_x D(x)`` in ``(0, 1]``, ``(B,)``.

    Same arguments as :func:`disagreement`. NaN for an image whose slice
    depths are not all finite. Invariant to a common positive scale of the
    slices (while they stay above ``eps``).

    Example:
    >>> import numpy as np, keras
    >>> d = np.ones((2, 4, 2, 2, 1), "float32"); d[1, 3] = 3.0
    >>> keras.ops.convert_to_numpy(quality(d, [0, 1])).tolist()
    [1.0, 0.75]
    """
    x, m, s, sel_idx, is_sel = _prepare(slice_depths, selected, slice_axis)
    return _quality_from(x, m, s, sel_idx, is_sel, float(eps))


def _quality_from(x, m, s, sel_idx, is_sel, eps):
    dmap = _disagreement(x, m, s, sel_idx, is_sel, eps)
    batch = ops.shape(dmap)[0]
    # A NaN pixel makes the image's mean (and Q) NaN.
    return 1.0 - ops.mean(ops.reshape(dmap, (batch, -1)), axis=1)


def slice_statistics(
    slice_depths,
    selected: Sequence[int],
    slice_axis: int = 1,
    spread: str = "selected",
    relative: bool = False,
    eps: float = DEFAULT_EPS,
):
    """``(mean_depth, uncertainty, q)`` from per-slice depths, one pass, keras.ops.

    Works on any backend, eagerly or on symbolic tensors inside a graph /
    compiled function.

    Args:
        slice_depths: per-slice depths with the slice axis at ``slice_axis``
            (``(B, m, H, W, 1)`` channels_last: 1; ``(B, 1, m, H, W)``
            channels_first: 2).
        selected: the ``s`` selected slice indices (list or int tensor /
            variable, e.g. ``SliceHead.selected``).
        spread: ``"selected"`` (std over the selected slices; needs ``s >= 2``)
            or ``"all"`` (std over all ``m`` slices).
        relative: divide the std by the mean of the same slices (clipped to
            ``eps``): a dimensionless coefficient of variation.
        eps: lower clip of slice depths for ``q`` (and of the mean for ``relative``).

    Returns:
        ``mean_depth``: the mean of the selected slices, unclipped — exactly
        the prediction of ``SliceHead(reduction="mean", activation=None)``,
        the slice axis removed; ``uncertainty``: same shape, population
        std (ddof 0); ``q``: ``(B,)``, :func:`quality` (NaN for non-finite
        slices).

    Example:
    >>> import numpy as np, keras
    >>> d = np.stack([np.full((1, 2, 2, 1), v, "float32") for v in (1.0, 2.0, 3.0, 4.0)], axis=1)
    >>> mean, unc, q = slice_statistics(d, [1, 2])
    >>> [float(keras.ops.convert_to_numpy(t).reshape(-1)[0]) for t in (mean, unc)]
    [2.5, 0.5]
    >>> round(float(keras.ops.convert_to_numpy(q)[0]), 4)   # pairs (2,1) (2,4) (3,1) (3,4): 1/3 1/3 1/2 1/7
    0.6726
    """
    if spread not in ("selected", "all"):
        raise ValueError(f"spread must be 'selected' or 'all', got {spread!r}.")
    x, m, s, sel_idx, is_sel = _prepare(slice_depths, selected, slice_axis)
    if spread == "selected" and s < 2:
        raise ValueError("spread='selected' needs at least 2 selected slices; use spread='all' for s = 1.")
    picked = ops.take(x, sel_idx, axis=1)
    mean_depth = ops.mean(picked, axis=1)
    members = picked if spread == "selected" else x
    centre = mean_depth if spread == "selected" else ops.mean(x, axis=1)
    uncertainty = ops.sqrt(ops.mean(ops.square(members - ops.expand_dims(centre, 1)), axis=1))
    if relative:
        uncertainty = uncertainty / ops.maximum(centre, eps)
    q = _quality_from(x, m, s, sel_idx, is_sel, float(eps))
    return mean_depth, uncertainty, q


# ---------------------------------------------------------------------------
# NumPy twin (float64, host arrays: evaluation and figures)
# ---------------------------------------------------------------------------
def slice_statistics_np(
    slice_depths,
    selected: Sequence[int],
    slice_axis: int = 1,
    spread: str = "selected",
    relative: bool = False,
    eps: float = DEFAULT_EPS,
    return_disagreement: bool = False,
):
    """NumPy (float64) twin of :func:`slice_statistics`; with
    ``return_disagreement`` also the per-pixel map ``D`` as a 4th output.

    Example:
    >>> d = np.stack([np.full((1, 2, 2, 1), v) for v in (1.0, 2.0, 3.0, 4.0)], axis=1)
    >>> mean, unc, q = slice_statistics_np(d, [1, 2])
    >>> float(mean[0, 0, 0, 0]), float(unc[0, 0, 0, 0]), round(float(q[0]), 4)
    (2.5, 0.5, 0.6726)
    """
    if spread not in ("selected", "all"):
        raise ValueError(f"spread must be 'selected' or 'all', got {spread!r}.")
    x = np.moveaxis(np.asarray(slice_depths, dtype="float64"), slice_axis, 1)
    m = x.shape[1]
    sel = [int(i) for i in np.asarray(selected).reshape(-1)]
    if len(set(sel)) != len(sel) or not all(0 <= i < m for i in sel):
        raise ValueError(f"selected must hold distinct slice indices in [0, {m}), got {sel}.")
    s = len(sel)
    if not 1 <= s < m:
        raise ValueError("Depth PQA needs 1 <= num_selected < depth (at least one unselected slice).")
    if spread == "selected" and s < 2:
        raise ValueError("spread='selected' needs at least 2 selected slices; use spread='all' for s = 1.")
    unsel = [j for j in range(m) if j not in sel]
    picked = x[:, sel]
    mean_depth = picked.mean(axis=1)
    members = picked if spread == "selected" else x
    uncertainty = members.std(axis=1)
    if relative:
        uncertainty = uncertainty / np.maximum(members.mean(axis=1), eps)
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (slice depths are clipped to it), got {eps}.")
    d = np.maximum(x, eps)
    with np.errstate(invalid="ignore"):
        dmap = np.zeros(x.shape[:1] + x.shape[2:])
        for i in sel:
            for j in unsel:
                dmap += np.abs(d[:, i] - d[:, j]) / (d[:, i] + d[:, j])
        dmap /= s * (m - s)
    dmap[~np.isfinite(x).all(axis=1)] = np.nan
    q = 1.0 - dmap.reshape(len(dmap), -1).mean(axis=1)
    return (mean_depth, uncertainty, q, dmap) if return_disagreement else (mean_depth, uncertainty, q)


# ---------------------------------------------------------------------------
# Correlation with the per-image error
# ---------------------------------------------------------------------------
def error_correlation(q, errors, metric: str = "rmse") -> dict:
    """Pearson / Spearman correlation of Q with a per-image depth metric.

    ``errors`` is the per-image metric (an array) or the dict returned by
    :func:`keras_sl.metrics.depth.depth_metrics` (its ``per_image[metric]``
    is used). The correlation is :func:`keras_sl.pqa.correlation` with its
    sign AS IS (non-finite pairs dropped and counted); the result adds
    ``metric`` and ``expected_sign``: -1 for error metrics (a useful Q
    correlates negatively with RMSE, AbsRel, ...), +1 for the δ accuracies.

    Example:
    >>> r = error_correlation([0.9, 0.8, 0.6, 0.5], [0.1, 0.2, 0.5, 0.4])
    >>> round(r["pearson_r"], 3), r["expected_sign"]
    (-0.9, -1)
    """
    from keras_sl.pqa import correlation

    if isinstance(errors, dict):
        errors = errors["per_image"][metric]
    result = correlation(q, errors)
    result["metric"] = metric
    result["expected_sign"] = -1 if metric in ERROR_METRICS else 1
    return result
