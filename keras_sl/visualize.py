"""Figures without matplotlib: image | truth | prediction | all slice maps."""

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
