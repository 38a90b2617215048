"""Figures: image | truth | prediction | all slice maps and the Q-vs-Dice
scatter plot (Pillow only), and the risk–coverage curve (matplotlib, imported
when drawn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def _to_rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype="float32")
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        a = (a - lo) / max(hi - lo, 1e-6)
    return (np.clip(a, 0, 1) * 255).astype("uint8")


def save_slice_figure(path, images, masks, probs, slice_logits, selected, q=None, dice=None, scale: int = 2) -> Path:
    """One row per image: input, ground truth, prediction, then the m slice
    maps ``sigmoid(logit) > 0.5`` (selected slices framed in green).

    ``slice_logits`` is ``(B, m, H, W, 1)`` (channels_last).
    """
    images = np.asarray(images)
    b, h, w = images.shape[:3]
    m = slice_logits.shape[1]
    pad, head = 4, 16
    cols = 3 + m
    canvas = Image.new("RGB", (cols * (w + pad) * scale, b * (h + pad) * scale + head), "white")
    draw = ImageDraw.Draw(canvas)
    labels = ["image", "truth", "prediction"] + [f"z{z}" for z in range(m)]
    for c, label in enumerate(labels):
        draw.text((c * (w + pad) * scale + 2, 2), label, fill=(0, 0, 0))
    for r in range(b):
        tiles = [_to_rgb(images[r]), _to_rgb(masks[r]), _to_rgb(probs[r] > 0.5)]
        tiles += [_to_rgb(slice_logits[r, z] > 0) for z in range(m)]
        for c, tile in enumerate(tiles):
            x0, y0 = c * (w + pad) * scale, head + r * (h + pad) * scale
            img = Image.fromarray(tile).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(img, (x0, y0))
            if c >= 3 and (c - 3) in selected:
                draw.rectangle([x0 - 1, y0 - 1, x0 + w * scale, y0 + h * scale], outline=(0, 170, 0), width=2)
        if q is not None and dice is not None:
            draw.text((2 * (w + pad) * scale + 2, head + r * (h + pad) * scale + 2),
                      f"Q={float(q[r]):.2f} D={float(dice[r]):.2f}", fill=(255, 64, 64))
    path = Path(path)
    canvas.save(path)
    return path


def save_scatter(path, q, dice, title: str = "", size: int = 420) -> Path:
    """Q-vs-Dice scatter plot (paper Table IV style) as a PNG, no matplotlib."""
    from keras_sl.pqa import correlation

    q = np.asarray(q, dtype="float64")
    dice = np.asarray(dice, dtype="float64")
    shown = np.isfinite(q) & np.isfinite(dice)  # a NaN Q (non-finite prediction) has no place on the axis
    if not shown.all():
        title = f"{title} ({int((~shown).sum())} non-finite left out)".strip()
        q, dice = q[shown], dice[shown]
    margin = 48
    canvas = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = margin, 20, size - 16, size - margin
    draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    lo_q = float(min(q.min(), 0.9 * q.min())) if q.size else 0.0
    lo_q = max(0.0, min(lo_q, 1.0 - 1e-3))

    def px(qv, dv):
        u = (qv - lo_q) / max(1.0 - lo_q, 1e-6)
        return x0 + u * (x1 - x0), y1 - dv * (y1 - y0)

    for t in np.linspace(0, 1, 6):
        yy = y1 - t * (y1 - y0)
        draw.line([x0 - 4, yy, x0, yy], fill=(0, 0, 0))
        draw.text((4, yy - 6), f"{t:.1f}", fill=(0, 0, 0))
        qq = lo_q + t * (1 - lo_q)
        xx = x0 + t * (x1 - x0)
        draw.line([xx, y1, xx, y1 + 4], fill=(0, 0, 0))
        draw.text((xx - 12, y1 + 6), f"{qq:.2f}", fill=(0, 0, 0))
    for qv, dv in zip(q, dice):
        cx, cy = px(qv, dv)
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], outline=(30, 90, 200), fill=(120, 160, 230))
    stats = correlation(q, dice) if q.size >= 3 else {"pearson_r": float("nan"), "spearman_rho": float("nan")}
    draw.text((x0 + 6, y0 + 4), f"{title}  r={stats['pearson_r']:.3f}  rho={stats['spearman_rho']:.3f}  n={q.size}",
              fill=(0, 0, 0))
    draw.text(((x0 + x1) // 2 - 40, size - 18), "PQA score Q", fill=(0, 0, 0))
    draw.text((4, 4), "Dice", fill=(0, 0, 0))
    path = Path(path)
    canvas.save(path)
    return path


def save_risk_coverage(path, q, dice, title: str = "", coverages=(0.8, 0.9)) -> Path:
    """The risk–coverage curve of ranking images by Q (risk = 1 - Dice), with
    the random ranking's expected curve and the oracle's, their AURCs in the
    legend (:mod:`keras_sl.selective`). Needs matplotlib (Agg, no display);
    raises ``ImportError`` with the install command without it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("The risk-coverage figure needs matplotlib: pip install matplotlib") from err
    from keras_sl import selective

    dice = np.asarray(dice, dtype="float64")
    risk = 1.0 - dice
    curve = selective.risk_coverage(q, risk)
    oracle = selective.oracle_curve(risk)
    fig = Figure(figsize=(5.2, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(curve.coverage, curve.risk, color="tab:blue", lw=2, label=f"ranked by Q (AURC {curve.area:.4f})")
    ax.plot([0, 1], [risk.mean()] * 2, color="tab:gray", ls="--",
            label=f"random ranking (AURC {selective.aurc_random(risk):.4f})")
    ax.plot(oracle.coverage, oracle.risk, color="tab:green", ls=":", lw=2, label=f"oracle (AURC {oracle.area:.4f})")
    for c in coverages:
        ax.axvline(c, color="0.8", lw=0.8, zorder=0)
        ax.annotate(f"Dice {1 - curve.risk_at(c):.3f}", (c, curve.risk_at(c)), textcoords="offset points",
                    xytext=(-4, 8), ha="right", fontsize=7)
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, max(float(curve.risk.max()), float(risk.mean())) * 1.05 + 1e-3)
    ax.set_xlabel("coverage (most confident images kept)")
    ax.set_ylabel("selective risk (1 - mean Dice of kept)")
    ax.set_title(f"{title}  n={risk.size}".strip(), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
