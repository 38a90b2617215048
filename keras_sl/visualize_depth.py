"""Depth figures: colour-mapped depth PNGs (Pillow; matplotlib's colormaps
when installed), the per-image evaluation figure and the Q-vs-error scatter
plot (matplotlib, imported when drawn).

Depth panels of one figure share one colour scale, ``0`` to the largest
valid target / predicted depth, written on the figure with a colour bar;
error and uncertainty panels share a second one (metres too), so the
uncertainty can be read against the error it should predict.

Example::

    from keras_sl.visualize_depth import save_depth_png
    vmin, vmax = save_depth_png("depth.png", depth)  # (H, W) metres -> colour PNG, its scale
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: Colour map of depth (truth, prediction, slices) and of error / uncertainty.
DEPTH_CMAP, ERROR_CMAP = "viridis", "magma"
#: Colour of pixels without a value: no ground-truth measurement, non-finite prediction.
NO_VALUE_RGB = (200, 200, 200)

# Used when matplotlib is absent: a dark-blue -> teal -> green -> yellow ramp
# (monotone lightness) and a black -> purple -> orange -> pale-yellow ramp.
_FALLBACK_RAMPS = {
    DEPTH_CMAP: [(0.0, (0.27, 0.0, 0.33)), (0.33, (0.2, 0.35, 0.55)), (0.66, (0.2, 0.7, 0.45)),
                 (1.0, (0.98, 0.9, 0.15))],
    ERROR_CMAP: [(0.0, (0.0, 0.0, 0.02)), (0.35, (0.45, 0.12, 0.5)), (0.7, (0.95, 0.45, 0.35)),
                 (1.0, (0.99, 0.99, 0.75))],
}


def _colormap_lut(name: str, n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 lookup table of a colormap (matplotlib's, else a built-in ramp)."""
    try:
        from matplotlib import colormaps

        return (colormaps[name](np.linspace(0, 1, n))[:, :3] * 255).round().astype("uint8")
    except ImportError:
        ramp = _FALLBACK_RAMPS.get(name, _FALLBACK_RAMPS[DEPTH_CMAP])
        stops = np.array([s for s, _ in ramp])
        colours = np.array([c for _, c in ramp])
        t = np.linspace(0, 1, n)
        return (np.stack([np.interp(t, stops, colours[:, k]) for k in range(3)], -1) * 255).round().astype("uint8")


def _squeeze(values) -> np.ndarray:
    a = np.asarray(values, dtype="float32")
    return a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a


def finite_max(*arrays, valid=None) -> float:
    """Largest finite value of the arrays (``valid``: a mask per array, or None), at least 1e-6."""
    best = 0.0
    for k, a in enumerate(arrays):
        if a is None:
            continue
        a = _squeeze(a)
        keep = np.isfinite(a)
        if valid is not None and valid[k] is not None:
            keep &= valid[k]
        if keep.any():
            best = max(best, float(a[keep].max()))
    return max(best, 1e-6)


def colorize(values, vmin: float, vmax: float, cmap: str = DEPTH_CMAP, valid=None) -> np.ndarray:
    """``(H, W)`` values (or ``(H, W, 1)``) -> ``(H, W, 3)`` uint8 on the
    scale ``[vmin, vmax]`` (values outside are clipped); non-finite values and
    pixels outside ``valid`` get :data:`NO_VALUE_RGB`."""
    a = _squeeze(values)
    if a.ndim != 2:
        raise ValueError(f"colorize takes an (H, W) or (H, W, 1) map, got shape {np.shape(values)}.")
    lut = _colormap_lut(cmap)
    shown = np.isfinite(a) if valid is None else np.isfinite(a) & np.asarray(valid, dtype=bool)
    t = (np.where(shown, a, vmin) - vmin) / max(vmax - vmin, 1e-12)
    rgb = lut[np.clip(np.round(t * (len(lut) - 1)), 0, len(lut) - 1).astype("int64")]
    rgb[~shown] = NO_VALUE_RGB
    return rgb


def save_depth_png(path, values, vmax: float | None = None, cmap: str = DEPTH_CMAP) -> tuple[float, float]:
    """Write ``values`` (``(H, W)`` metres) colour-mapped at their own size
    on the scale ``0..vmax`` (default: their finite maximum); returns the scale ``(0.0, vmax)``."""
    vmax = finite_max(values) if vmax is None else float(vmax)
    Image.fromarray(colorize(values, 0.0, vmax, cmap)).save(Path(path))
    return 0.0, vmax


def _matplotlib(what: str):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(f"The {what} needs matplotlib: pip install matplotlib") from err
    return Figure, FigureCanvasAgg


def save_depth_figure(path, image, target, depth, uncertainty=None, slices=None, selected=(), title: str = "",
                      dpi: int = 100) -> Path:
    """One image's evaluation figure: RGB, ground truth, prediction,
    |prediction - truth|, the uncertainty map (SL) and, below, the per-slice
    depths ``slices`` ``(m, H, W[, 1])`` with the ``selected`` ones framed in
    green. All maps ``(H, W[, 1])`` at the image's size, in metres.

    Truth, prediction and slices share one colour scale (0 to the largest
    valid truth or predicted depth; slices beyond it are clipped), error and
    uncertainty another; both are drawn as colour bars and written in the
    title. Needs matplotlib (Agg, no display)."""
    Figure, FigureCanvasAgg = _matplotlib("depth figure")
    target, depth = _squeeze(target), _squeeze(depth)
    valid = np.isfinite(target) & (target > 0)
    error = np.where(valid, np.abs(depth - target), np.nan)
    dmax = finite_max(target, depth, valid=[valid, None])
    emax = finite_max(error, uncertainty)
    slices = None if slices is None else [_squeeze(s) for s in slices]
    m = len(slices) if slices is not None else 0
    top = ["RGB", "truth (grey: no measurement)", "prediction", "|prediction - truth|"]
    if uncertainty is not None:
        top.append("uncertainty (slice spread)")
    ncols = max(len(top), min(m, 8))
    slice_rows = -(-m // ncols) if m else 0
    h, w = target.shape
    panel = 2.4
    fig = Figure(figsize=(ncols * panel * max(w / h, 0.5) + 1.4, (1 + slice_rows) * panel + 0.9), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1 + slice_rows, ncols + 1, width_ratios=[1] * ncols + [0.06])
    depth_axes, error_axes = [], []

    def show(ax, data, label, kind):
        ax.imshow(data, interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        (depth_axes if kind == "depth" else error_axes if kind == "error" else []).append(ax)
        return ax

    rgb = np.asarray(image)
    rgb = rgb if rgb.dtype == np.uint8 else np.clip(rgb, 0, 1)
    show(fig.add_subplot(grid[0, 0]), rgb, top[0], "rgb")
    show(fig.add_subplot(grid[0, 1]), colorize(target, 0, dmax, DEPTH_CMAP, valid), top[1], "depth")
    show(fig.add_subplot(grid[0, 2]), colorize(depth, 0, dmax, DEPTH_CMAP), top[2], "depth")
    show(fig.add_subplot(grid[0, 3]), colorize(error, 0, emax, ERROR_CMAP), top[3], "error")
    if uncertainty is not None:
        show(fig.add_subplot(grid[0, 4]), colorize(uncertainty, 0, emax, ERROR_CMAP), top[4], "error")
    chosen = {int(i) for i in selected}
    for z in range(m):
        ax = show(fig.add_subplot(grid[1 + z // ncols, z % ncols]), colorize(slices[z], 0, dmax, DEPTH_CMAP),
                  f"slice z{z}" + (" (selected)" if z in chosen else ""), "depth")
        if z in chosen:
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green")
                spine.set_linewidth(3)
    from matplotlib import colors
    from matplotlib.cm import ScalarMappable

    errors = "error" if uncertainty is None else "error and uncertainty"
    bars = fig.add_gridspec(2, ncols + 1, width_ratios=[1] * ncols + [0.06], hspace=0.35)
    for row, (cmap, vmax, label) in enumerate(((DEPTH_CMAP, dmax, "depth (m)"),
                                                (ERROR_CMAP, emax, "error (m)" if uncertainty is None
                                                 else "error, uncertainty (m)"))):
        bar = fig.colorbar(ScalarMappable(colors.Normalize(0, vmax), cmap), cax=fig.add_subplot(bars[row, -1]))
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    scale = f"depth scale 0-{dmax:.2f} m ({DEPTH_CMAP}); {errors} scale 0-{emax:.3f} m ({ERROR_CMAP})"
    fig.suptitle(f"{title}\n{scale}".strip(), fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.93, bottom=0.04, top=0.84 if slice_rows else 0.76, wspace=0.08,
                        hspace=0.3)
    path = Path(path)
    fig.savefig(path)
    return path


def save_depth_scatter(path, q, error, title: str = "", error_name: str = "RMSE (m)") -> Path:
    """Q against the per-image error (e.g. RMSE) of an SL depth model, with
    Pearson / Spearman in the title (negative: high Q, low error, Q is
    useful); images with a non-finite Q or error are left out and counted.
    Needs matplotlib (Agg, no display)."""
    Figure, FigureCanvasAgg = _matplotlib("Q-vs-error scatter plot")
    from keras_sl.pqa import correlation

    q = np.asarray(q, dtype="float64")
    error = np.asarray(error, dtype="float64")
    shown = np.isfinite(q) & np.isfinite(error)
    left_out = int((~shown).sum())
    q, error = q[shown], error[shown]
    stats = correlation(q, error) if q.size >= 3 else {"pearson_r": float("nan"), "spearman_rho": float("nan")}
    fig = Figure(figsize=(5.0, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(q, error, s=14, color="tab:blue", alpha=0.8)
    ax.set_xlabel("depth PQA score Q (higher = more confident)")
    ax.set_ylabel(error_name)
    note = f"  ({left_out} non-finite left out)" if left_out else ""
    ax.set_title(f"{title}\nPearson r={stats['pearson_r']:.3f}  Spearman rho={stats['spearman_rho']:.3f}  "
                 f"n={q.size}{note}\n(negative: high Q, low error)".strip(), fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
