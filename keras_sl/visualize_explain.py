"""The per-slice explanation figure (paper Fig. 2) of :func:`keras_sl.explain.explain`.

One figure per image: a first row with the image, the model's prediction
(with Q for SL models) and the region each slice's score averages; then one
row per method (saliency, Grad-CAM, guided backpropagation) with one map per
lifted slice, the selected slices framed in green and marked ``*``. The
saliency and guided-backprop maps of a row share one colour scale (0 to the
row's 99.5th percentile, written at the row's start), so the slices can be
compared; Grad-CAM maps are each scaled to their own (99.5th percentile),
as Grad-CAM is usually shown (their sizes differ by orders of magnitude
between slices), with their maximum relative to the row's in the caption,
and drawn over the grey image. Drawn with matplotlib (Agg, no display) when it is
installed, else with Pillow alone (same layout, a built-in colour ramp).

Example::

    from keras_sl.explain import explain
    from keras_sl.visualize_explain import save_explanation_figure

    result = explain(model, image, methods=("saliency", "gradcam", "guided_backprop"))
    save_explanation_figure("explain.png", image, result, title="cell.png")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Row titles of the methods (keys of :func:`keras_sl.explain.explain`'s result), in figure order.
METHOD_TITLES = {"saliency": "saliency |d score/d x|", "gradcam": "Grad-CAM", "guided_backprop": "guided backprop"}
#: Frame colour of the selected slices.
SELECTED_RGB = (0, 170, 0)
_MAP_CMAP = "inferno"


def _image_rgb(image) -> np.ndarray:
    """An image as float RGB in [0, 1] (uint8 / [0, 1] floats as they are, other ranges stretched)."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):  # channels-first
        a = np.moveaxis(a, 0, -1)
    a = a.astype("float32") / (255.0 if a.dtype == np.uint8 else 1.0)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] != 3:
        a = np.repeat(a[..., :1], 3, axis=-1)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if lo < 0 or hi > 1:
        a = (a - lo) / max(hi - lo, 1e-6)
    return np.clip(np.nan_to_num(a), 0, 1)


def _scale(maps: np.ndarray) -> float:
    """A row's colour-scale top: the 99.5th percentile of its finite values (its max when that is 0)."""
    values = np.asarray(maps, "float32")
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1.0
    top = float(np.percentile(values, 99.5))
    return top if top > 0 else max(float(values.max()), 1e-12)


def _lut(name: str, n: int = 256) -> np.ndarray:
    """``(n, 3)`` float colours of a colormap: matplotlib's, else a black-red-yellow-white ramp."""
    try:
        from matplotlib import colormaps

        return colormaps[name](np.linspace(0, 1, n))[:, :3]
    except ImportError:
        t = np.linspace(0, 1, n)
        return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], -1)


def _colour(values: np.ndarray, top: float, cmap: str = _MAP_CMAP) -> np.ndarray:
    lut = _lut(cmap)
    t = np.clip(np.nan_to_num(np.asarray(values, "float32") / max(top, 1e-12)), 0, 1)
    return lut[(t * (len(lut) - 1)).round().astype(int)]


def _prediction_rgb(result: dict) -> tuple[np.ndarray, str]:
    """The prediction as RGB in [0, 1] and its caption."""
    pred = np.asarray(result["prediction"], "float32")
    if pred.ndim == 3 and pred.shape[-1] == 1:
        pred = pred[..., 0]
    q = result.get("quality")
    suffix = f", Q={q:.3f}" if q is not None and np.isfinite(q) else ""
    if result.get("task") == "regression":
        top = float(np.nanmax(pred)) if np.isfinite(pred).any() else 1.0
        return _colour(pred, top, "viridis"), f"prediction (0-{top:.3g}){suffix}"
    if pred.ndim == 3:  # K classes: label map
        labels = pred.argmax(-1)
        palette = np.array([[0, 0, 0], [0.9, 0.2, 0.2], [0.2, 0.7, 0.2], [0.2, 0.4, 0.9], [0.9, 0.8, 0.1],
                            [0.8, 0.3, 0.8], [0.1, 0.8, 0.8], [1, 0.6, 0.2], [0.6, 0.6, 0.6], [1, 1, 1]])
        return palette[labels % len(palette)], f"prediction (labels){suffix}"
    return np.repeat(np.clip(pred, 0, 1)[..., None], 3, -1), f"prediction{suffix}"


def _rows(image, result: dict) -> list[tuple[str, list, list]]:
    """``(row title, [(RGB panel, caption, selected)], ...)`` of the whole figure."""
    rgb = _image_rgb(image)
    grey = rgb.mean(-1, keepdims=True)
    pred, pred_caption = _prediction_rgb(result)
    region = np.asarray(result.get("region", np.ones(rgb.shape[:2], bool)), bool)
    region_rgb = 0.35 * grey + 0.65 * region[..., None] * np.array([1.0, 0.85, 0.2])
    target = result.get("target_class")
    first = [(rgb, "image", False), (pred, pred_caption, False),
             (np.clip(region_rgb, 0, 1), f"explained: {result.get('region_kind', '')}"
              + (f", class {target}" if target is not None else ""), False)]
    rows = [("", first)]
    selected = {int(s) for s in result.get("selected_slices", ())}
    for method, title in METHOD_TITLES.items():
        if method not in result:
            continue
        maps = np.asarray(result[method], "float32")
        top = _scale(maps)
        row_max = max(float(np.nanmax(maps)), 1e-30) if maps.size else 1.0
        panels = []
        for z, plane in enumerate(maps):
            caption = f"z{z}" + (" *" if z in selected else "")
            if method == "gradcam":
                own = _scale(plane) if plane.any() else 1.0
                coloured = _colour(plane, own)
                alpha = np.clip(np.nan_to_num(plane / own), 0, 1)[..., None] * 0.75
                coloured = (1 - alpha) * grey + alpha * coloured
                caption += f" ({float(np.nanmax(plane)) / row_max:.2g})"
            else:
                coloured = _colour(plane, top)
            panels.append((coloured, caption, z in selected))
        if method == "gradcam":
            label = f"{title} ({result.get('layer')}), each map to its max" if result.get("layer") else title
        else:
            label = f"{title}, 0-{top:.2g}"
        rows.append((label if maps.any() else f"{title}: all zero", panels))
    return rows


def save_explanation_figure(path, image, result: dict, title: str = "", engine: str = "auto") -> Path:
    """Write the figure (PNG) of one image's :func:`keras_sl.explain.explain` result.

    ``engine``: ``"matplotlib"``, ``"pillow"`` or ``"auto"`` (matplotlib
    when installed).
    """
    if engine not in ("auto", "matplotlib", "pillow"):
        raise ValueError(f"engine must be 'auto', 'matplotlib' or 'pillow'; got {engine!r}.")
    rows = _rows(image, result)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if engine != "pillow":
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        except ImportError:
            if engine == "matplotlib":
                raise ImportError("The explanation figure with engine='matplotlib' needs matplotlib: "
                                  "pip install matplotlib") from None
        else:
            return _save_matplotlib(path, rows, title)
    return _save_pillow(path, rows, title)


def _save_matplotlib(path: Path, rows, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = max(len(panels) for _, panels in rows)
    h, w = rows[0][1][0][0].shape[:2]
    cell = 1.5
    fig = Figure(figsize=(cols * cell * max(w / h, 0.5) + 0.4, len(rows) * (cell + 0.35) + 0.4), dpi=110)
    FigureCanvasAgg(fig)
    for r, (label, panels) in enumerate(rows):
        for c in range(cols):
            ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(panels):
                ax.axis("off")
                continue
            panel, caption, selected = panels[c]
            ax.imshow(np.clip(panel, 0, 1), interpolation="nearest")
            ax.set_title(caption, fontsize=7, color="green" if selected else "black")
            for spine in ax.spines.values():
                spine.set_edgecolor("green" if selected else "0.6")
                spine.set_linewidth(2.5 if selected else 0.5)
            if c == 0 and label:
                ax.set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _save_pillow(path: Path, rows, title: str, scale: int = 2) -> Path:
    h, w = rows[0][1][0][0].shape[:2]
    cols = max(len(panels) for _, panels in rows)
    pad, head, caption = 6, 16 if title else 2, 15
    tile_w, tile_h = w * scale, h * scale
    row_h = tile_h + caption + 12 + pad
    canvas = Image.new("RGB", (cols * (tile_w + pad) + pad, head + len(rows) * row_h), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill=(0, 0, 0))
    for r, (label, panels) in enumerate(rows):
        y0 = head + r * row_h
        if label:
            draw.text((pad, y0), label, fill=(0, 0, 0))
        for c, (panel, text, selected) in enumerate(panels):
            x0, top = pad + c * (tile_w + pad), y0 + 12 + caption
            tile = Image.fromarray((np.clip(panel, 0, 1) * 255).round().astype("uint8"))
            canvas.paste(tile.resize((tile_w, tile_h), Image.NEAREST), (x0, top))
            draw.text((x0, y0 + 12), text, fill=SELECTED_RGB if selected else (0, 0, 0))
            if selected:
                draw.rectangle([x0 - 2, top - 2, x0 + tile_w + 1, top + tile_h + 1], outline=SELECTED_RGB, width=2)
    canvas.save(path)
    return path
