"""Prediction quality assessment (paper Section III-B, eq. 11).

``Q`` is the mean Dice between the binarised maps of every selected slice and
every unselected slice, computed from the single forward pass that also gives
the prediction.

Non-finite outputs are never called good: an image whose slice logits hold a
NaN or Inf gets ``Q = NaN`` (thresholding NaN would otherwise make every map
empty and every pair agree, Q = 1). :func:`keras_sl.selective.is_flagged` flags such
images together with those below the threshold, and :func:`correlation`
leaves non-finite pairs out and reports how many.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from keras import ops


def _binary_maps(slice_logits, num_classes: int, class_axis: int):
    """Per-slice binary maps, with classes moved to the last axis."""
    if num_classes == 1:
        return ops.cast(slice_logits > 0, "float32")  # sigmoid(p) > 0.5
    labels = ops.argmax(slice_logits, axis=class_axis)
    onehot = ops.one_hot(labels, num_classes)
    return onehot[..., 1:]  # foreground classes only


def quality(
    slice_logits,
    selected: Sequence[int],
    data_format: str = "channels_last",
    smooth: float = 0.0,
):
    """Per-image PQA score Q from slice logits (eq. 11).

    Args:
        slice_logits: ``(B, m, *spatial, K)`` (or ``(B, K, m, *spatial)`` for
            channels_first) logits of an SL network.
        selected: indices of the ``s`` selected slices (eq. 7).
        data_format: layout of ``slice_logits``.
        smooth: added to numerator and denominator of each Dice. With the
            default 0, a pair of empty maps counts as full agreement (Dice 1).

    Returns:
        Tensor ``(B,)`` with Q in [0, 1], or NaN for an image whose slice
        logits are not all finite. Binary tasks (K=1) threshold the
        logits at 0; multi-class tasks compare one-hot argmax maps and
        average Dice over the foreground classes 1..K-1.

    Example:
    >>> import numpy as np
    >>> logits = np.ones((2, 16, 8, 8, 1), "float32")
    >>> import keras
    >>> keras.ops.convert_to_numpy(quality(logits, [0, 1, 2, 3, 4])).round(6).tolist()
    [1.0, 1.0]
    """
    if data_format == "channels_first":
        # (B, K, m, *spatial) -> (B, m, *spatial, K)
        nd = len(slice_logits.shape)
        slice_logits = ops.transpose(slice_logits, (0, 2, *range(3, nd), 1))
    depth = slice_logits.shape[1]
    num_classes = slice_logits.shape[-1]
    # Pair weights: 1 / (s (m - s)) for (selected, unselected) pairs, else 0.
    # Built from a tensor so that `selected` may be a (saved) variable.
    is_sel = ops.minimum(ops.sum(ops.one_hot(ops.convert_to_tensor(selected, "int32"), depth), axis=0), 1.0)
    num_sel = ops.sum(is_sel)
    if isinstance(selected, (list, tuple, np.ndarray)) and len(np.asarray(selected).reshape(-1)) >= depth:
        raise ValueError("PQA needs at least one unselected slice (num_selected < depth).")
    pair_w = is_sel[:, None] * (1.0 - is_sel)[None, :] / (num_sel * (depth - num_sel))
    maps = _binary_maps(slice_logits, num_classes, -1)
    batch = ops.shape(maps)[0]
    maps = ops.reshape(maps, (batch, depth, -1, maps.shape[-1]))  # (B, m, P, K')
    inter = ops.einsum("bipk,bjpk->bijk", maps, maps)
    sizes = ops.sum(maps, axis=2)  # (B, m, K')
    denom = sizes[:, :, None, :] + sizes[:, None, :, :]
    dice = ops.where(
        denom > 0,
        (2.0 * inter + smooth) / ops.maximum(denom + smooth, 1e-12),
        ops.ones_like(denom),
    )
    dice = ops.mean(dice, axis=-1)  # average over foreground classes
    q = ops.sum(dice * pair_w[None], axis=(1, 2))
    # NaN for an image with a non-finite logit: |x| < inf is False for NaN and
    # +-Inf, so `finite` is 1 or 0 per image and q * finite / finite is q or
    # 0/0 = NaN. Arithmetic, not ops.where: tf2onnx can lower a select with a
    # NaN branch to arithmetic that makes every row NaN (checked: ONNX, LiteRT, XLA).
    finite = ops.min(ops.cast(ops.abs(ops.reshape(slice_logits, (batch, -1))) < float("inf"), "float32"), axis=1)
    return q * finite / finite


def quality_np(slice_logits, selected: Sequence[int], data_format: str = "channels_last",
               smooth: float = 0.0) -> np.ndarray:
    """NumPy twin of :func:`quality` (host arrays, exact pixel counts, float64 ``(B,)``).

    The same Q from the same logits on every backend, at any image size
    without compiling anything: what sliding-window and TTA predictions use
    (:meth:`keras_sl.tasks.task.Task.predict`).

    Example:
    >>> logits = np.ones((1, 4, 8, 8, 1), "float32"); logits[:, 3, :4] = -1.0   # slice 3 half empty
    >>> quality_np(logits, [0, 1]).round(4).tolist()   # Dice 2/3 against slice 3, 1 against slice 2
    [0.8333]
    """
    x = np.asarray(slice_logits)
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)  # (B, K, m, *spatial) -> (B, m, *spatial, K)
    batch, depth, num_classes = x.shape[0], x.shape[1], x.shape[-1]
    sel = [int(i) for i in np.asarray(selected).reshape(-1)]
    unsel = [j for j in range(depth) if j not in sel]
    if not unsel:
        raise ValueError("PQA needs at least one unselected slice (num_selected < depth).")
    if num_classes == 1:
        maps = x > 0  # sigmoid(p) > 0.5
    else:
        labels = np.argmax(x, axis=-1)
        maps = np.stack([labels == k for k in range(1, num_classes)], axis=-1)  # foreground classes only
    maps = maps.reshape(batch, depth, -1, maps.shape[-1])  # (B, m, P, K')
    sizes = maps.sum(axis=2, dtype="float64")  # (B, m, K')
    dice = np.zeros((batch, len(sel), len(unsel), maps.shape[-1]))
    for a, i in enumerate(sel):
        for b, j in enumerate(unsel):
            inter = np.logical_and(maps[:, i], maps[:, j]).sum(axis=1, dtype="float64")  # (B, K')
            denom = sizes[:, i] + sizes[:, j]
            with np.errstate(invalid="ignore", divide="ignore"):
                dice[:, a, b] = np.where(denom > 0, (2.0 * inter + smooth) / np.maximum(denom + smooth, 1e-12), 1.0)
    q = dice.mean(axis=-1).mean(axis=(1, 2))
    q[~np.isfinite(x.reshape(batch, -1)).all(axis=1)] = np.nan
    return q


def correlation(q, dice) -> dict:
    """Pearson and Spearman correlation between Q and the true Dice (Table IV).

    Returns a dict with ``pearson_r``, ``pearson_p``, ``spearman_rho``,
    ``spearman_p``, ``n`` (pairs used) and ``n_dropped``. Pairs where Q or
    the Dice is NaN/Inf (e.g. Q of a non-finite prediction) are left out and
    counted in ``n_dropped``; inspect those images separately (they are
    flagged by :func:`keras_sl.selective.is_flagged`). Correlation is undefined (NaN) when
    fewer than 3 finite pairs remain or either input is constant.

    Example:
    >>> r = correlation([0.2, 0.5, 0.9, 0.7], [0.1, 0.6, 0.95, 0.6])
    >>> round(r["pearson_r"], 3), r["n"]
    (0.962, 4)
    >>> correlation([0.2, float("nan"), 0.9, 0.7], [0.1, 0.6, 0.95, 0.6])["n_dropped"]
    1
    """
    from scipy import stats

    q = np.asarray(q, dtype="float64").reshape(-1)
    dice = np.asarray(dice, dtype="float64").reshape(-1)
    if q.shape != dice.shape:
        raise ValueError(f"q and dice must have the same length, got {q.shape} and {dice.shape}.")
    if q.size < 3:
        raise ValueError(f"Correlation needs at least 3 images, got {q.size}.")
    keep = np.isfinite(q) & np.isfinite(dice)
    dropped = int(q.size - np.count_nonzero(keep))
    q, dice = q[keep], dice[keep]
    if q.size < 3 or np.ptp(q) == 0 or np.ptp(dice) == 0:
        nan = float("nan")
        return {"pearson_r": nan, "pearson_p": nan, "spearman_rho": nan, "spearman_p": nan, "n": int(q.size),
                "n_dropped": dropped}
    pr = stats.pearsonr(q, dice)
    sr = stats.spearmanr(q, dice)
    return {
        "pearson_r": float(pr.statistic),
        "pearson_p": float(pr.pvalue),
        "spearman_rho": float(sr.statistic),
        "spearman_p": float(sr.pvalue),
        "n": int(q.size),
        "n_dropped": dropped,
    }
