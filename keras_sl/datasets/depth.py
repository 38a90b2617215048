"""Depth-estimation readers: shared decoding of depth maps to metres.

Every depth reader returns targets as ``float32`` arrays ``(H, W, 1)`` in
metres where **invalid pixels are exactly 0.0**: no-return sentinels
(e.g. 0 or 65535 in uint16 PNGs), NaN, +/-inf, non-positive values and values
beyond a dataset's sensor range are all mapped to 0, so a loss or metric only
has to mask ``target > 0``.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image

from keras_sl.datasets.base import Dataset, Sample


def sanitize_depth(depth: np.ndarray, invalid: np.ndarray | None = None, max_depth: float | None = None) -> np.ndarray:
    """``float32 (H, W, 1)`` depth with every invalid pixel set to exactly 0.

    Invalid: ``invalid`` (a boolean mask of sentinel pixels), non-finite
    values, values ``<= 0`` and, when ``max_depth`` is given, values above it.

    Example:
    >>> sanitize_depth(np.array([[1.5, np.nan], [-2.0, 9.0]]), max_depth=5.0)[..., 0].tolist()
    [[1.5, 0.0], [0.0, 0.0]]
    """
    d = np.asarray(depth, dtype="float64")
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"A depth map must be (H, W) or (H, W, 1), got shape {np.shape(depth)}.")
    bad = ~np.isfinite(d) | (d <= 0)
    if max_depth is not None:
        bad |= d > max_depth
    if invalid is not None:
        inv = np.asarray(invalid, dtype=bool)
        bad |= inv[..., 0] if inv.ndim == 3 else inv
    d = np.where(bad, 0.0, d)
    return d.astype("float32")[..., None]


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``(h, w[, c])`` to ``size = (H, W)``.

    Pure index arithmetic (pixel centres), so values — including the exact 0.0
    of invalid depth — are copied, never interpolated.
    """
    h, w = array.shape[:2]
    H, W = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return array
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(int), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(int), w - 1)
    return array[rows[:, None], cols[None, :]]


def read_png_array(path: os.PathLike) -> np.ndarray:
    """Raw pixel values of a (16-bit) PNG/greyscale image, no rescaling."""
    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA", "P", "LA"):
            im = im.convert("L")
        return np.asarray(im)


class DepthDataset(Dataset):
    """Base reader for monocular depth estimation.

    Subclasses set the decoding: ``depth_scale`` (metres per stored unit),
    ``invalid_values`` (raw sentinel values meaning "no measurement"),
    ``max_depth`` (decoded values above it are invalid, e.g. the sky return of
    a laser), and override :meth:`read_raw_depth` / :meth:`decode_depth` when
    the file format needs it. :meth:`read_target` returns ``float32 (H, W, 1)``
    metres with invalid pixels exactly 0.0; :meth:`load` additionally brings
    the depth map to the image's ``(H, W)`` with nearest-neighbour sampling
    when the two differ (e.g. Make3D's 55x305 laser grid).
    """

    task = "depth"
    depth_scale: float = 1.0
    invalid_values: tuple = ()
    max_depth: float | None = None

    # -- decoding hooks ---------------------------------------------------------
    def read_raw_depth(self, sample: Sample) -> np.ndarray:
        """Stored values of the depth file (default: a PNG, read losslessly)."""
        return read_png_array(sample.targets[0])

    def decode_depth(self, raw: np.ndarray, sample: Sample) -> np.ndarray:
        """Raw stored values to metres (default: ``raw * depth_scale``)."""
        return np.asarray(raw, dtype="float64") * self.depth_scale

    def read_target(self, sample: Sample) -> np.ndarray:
        raw = np.asarray(self.read_raw_depth(sample))
        if raw.ndim == 3 and raw.shape[-1] == 1:
            raw = raw[..., 0]
        invalid = np.isin(raw, self.invalid_values) if len(self.invalid_values) else None
        return sanitize_depth(self.decode_depth(raw, sample), invalid, self.max_depth)

    # -- images -------------------------------------------------------------------------
    def read_sample_image(self, sample: Sample) -> np.ndarray:
        """RGB ``uint8 (H, W, 3)`` of ``sample`` (override for container files)."""
        return self.read_image(sample.image)

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        image = self.read_sample_image(sample)
        depth = self.read_target(sample)
        return image, resize_nearest(depth, image.shape[:2])

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def contiguous_split(samples: Sequence[Sample], test_fraction: float) -> tuple[list[Sample], list[Sample]]:
        """Sequence-aware split: the last ``test_fraction`` of ``samples`` (in
        the given order) is the test block, everything before it the train block."""
        samples = list(samples)
        if len(samples) < 2:
            return samples, []
        n_test = min(len(samples) - 1, max(1, round(len(samples) * test_fraction)))
        return samples[:-n_test], samples[-n_test:]
