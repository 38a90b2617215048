"""Procedural "cells" segmentation data: seeded, offline, any size.

Each image shows textured, coloured ellipses ("cells", the foreground) and
decoy blobs of another hue on a textured background, with per-image noise
and blur. Difficulty varies from image to image (noise, contrast, decoys),
so a model's per-image Dice varies too — which is what PQA must predict.
"""

from __future__ import annotations

import numpy as np


def _smooth_noise(rng, size: int, scale: int) -> np.ndarray:
    """Value noise: coarse random grid, bilinearly upsampled to ``size``."""
    n = max(2, size // scale + 2)
    grid = rng.random((n, n)).astype("float32")
    t = np.linspace(0, n - 1.001, size)
    i = t.astype(int)
    f = (t - i)[:, None]
    rows = grid[i] * (1 - f) + grid[i + 1] * f
    g = (t - i)[None, :]
    return rows[:, i] * (1 - g) + rows[:, i + 1] * g


def _ellipse(size, cy, cx, ry, rx, angle):
    yy, xx = np.mgrid[0:size, 0:size].astype("float32")
    c, s = np.cos(angle), np.sin(angle)
    y, x = yy - cy, xx - cx
    u = (x * c + y * s) / rx
    v = (-x * s + y * c) / ry
    return (u * u + v * v) <= 1.0


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return img
    k = 2 * radius + 1
    pad = np.pad(img, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    c = np.cumsum(np.cumsum(pad, 0), 1)
    c = np.pad(c, ((1, 0), (1, 0), (0, 0)))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def make_cells(n: int, size: int = 64, seed: int = 0, max_cells: int = 6):
    """Generate ``n`` images ``(n, size, size, 3)`` in [0, 1] and binary masks
    ``(n, size, size, 1)``, deterministic for a given ``seed``.

    Example:
    >>> x, y = make_cells(2, size=32, seed=1)
    >>> x.shape, y.shape, sorted(np.unique(y).tolist())
    ((2, 32, 32, 3), (2, 32, 32, 1), [0.0, 1.0])
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), "float32")
    masks = np.zeros((n, size, size, 1), "float32")
    for k in range(n):
        hard = rng.random()  # per-image difficulty in [0, 1)
        base = rng.uniform(0.25, 0.55, 3).astype("float32")
        bg = base + 0.25 * (_smooth_noise(rng, size, max(4, size // 8))[..., None] - 0.5)
        img = np.broadcast_to(bg, (size, size, 3)).copy()
        cell_rgb = np.clip(base + rng.choice([-1, 1]) * rng.uniform(0.2, 0.4) * (1.0 - 0.6 * hard), 0, 1)
        decoy_rgb = np.clip(base + rng.uniform(-0.3, 0.3, 3), 0, 1)
        mask = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, max_cells + 1)):
            r = rng.uniform(size / 14, size / 6)
            e = _ellipse(size, rng.uniform(0, size), rng.uniform(0, size), r, r * rng.uniform(0.6, 1.4), rng.uniform(0, np.pi))
            mask |= e
        texture = _smooth_noise(rng, size, 3)[..., None]
        img = np.where(mask[..., None], cell_rgb * (0.8 + 0.4 * texture), img)
        for _ in range(rng.integers(0, 2 + int(4 * hard))):
            r = rng.uniform(size / 16, size / 8)
            e = _ellipse(size, rng.uniform(0, size), rng.uniform(0, size), r, r, 0.0) & ~mask
            img = np.where(e[..., None], decoy_rgb, img)
        img = _box_blur(img, int(rng.integers(0, 2)))
        img = img + rng.normal(0, 0.02 + 0.12 * hard, img.shape)
        images[k] = np.clip(img, 0, 1)
        masks[k, ..., 0] = mask
    return images, masks
