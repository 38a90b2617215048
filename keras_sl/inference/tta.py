"""Test-time augmentation by flips: average a network's outputs over flipped views of its input.

``tta="flips"`` runs each network input as is and flipped along every
non-empty set of spatial axes (2-D: horizontal, vertical, both: 4 views;
k-D: 2^k views), flips each output back, and averages the outputs
elementwise. What is averaged is the network's raw output — the logits
(segmentation), the depth values (regression) or, for SL models, every
slice's logits ``(B, m, *spatial, K)`` — before any activation, slice
reduction or PQA; see :meth:`keras_sl.tasks.task.Task.predict`.

Example:
>>> import numpy as np
>>> x = np.arange(6, dtype="float32").reshape(1, 2, 3, 1)
>>> flip_views("flips", 2)
[(), (1,), (0,), (0, 1)]
>>> averaged = with_flips(lambda b: b * 2, flip_views("flips", 2))(x)   # flip-equivariant: no change
>>> bool(np.allclose(averaged, 2 * x))
True
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from keras_sl.utils.layout import standardize_data_format

#: Test-time augmentations ``predict(..., tta=...)`` accepts (None: no augmentation).
TTA_MODES = (None, "flips")


def flip_views(tta: str | None, rank: int) -> list[tuple[int, ...]]:
    """The spatial axes (0-based among the ``rank`` spatial axes) each view flips.

    The first view is the input itself; for 2-D images ``"flips"`` adds the
    horizontal (axis 1, width), vertical (axis 0) and both flips.

    Example:
    >>> flip_views(None, 2), len(flip_views("flips", 3))
    ([()], 8)
    """
    if tta is None or tta is False:
        return [()]
    if tta != "flips":
        raise ValueError(f"tta must be None or 'flips' (the input and its flips along every spatial axis), "
                         f"got {tta!r}.")
    views = [()]
    for count in range(1, rank + 1):
        # Last axis first: the horizontal flip comes before the vertical one.
        views += [tuple(sorted(c)) for c in itertools.combinations(range(rank - 1, -1, -1), count)]
    return views


def with_flips(
    predictor: Callable[[np.ndarray], np.ndarray],
    views: Sequence[tuple[int, ...]],
    data_format: str | None = None,
    lead_axes: int = 0,
) -> Callable[[np.ndarray], np.ndarray]:
    """``predictor`` averaged over flipped views of its input.

    Args:
        predictor: ``(n, *spatial, C) -> (n, *lead, *spatial, K)`` (channels_first:
            ``(n, C, *spatial) -> (n, K, *lead, *spatial)``), NumPy in and out.
        views: from :func:`flip_views`; ``[()]`` returns ``predictor`` itself.
        data_format: layout of the input and output.
        lead_axes: output axes between the batch (channels_first: channel) axis
            and the spatial axes (1 for per-slice logits).

    Returns:
        A predictor that calls ``predictor`` once per view (same batch size)
        and returns the float32 mean of the un-flipped outputs.

    Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((1, 4, 4, 1)).astype("float32")
    >>> left = lambda b: np.roll(b, 1, axis=2)   # not flip-equivariant
    >>> out = with_flips(left, flip_views("flips", 2))(x)
    >>> bool(np.allclose(out, (np.roll(x, 1, axis=2) + np.roll(x, -1, axis=2)) / 2))
    True
    """
    views = [tuple(v) for v in views]
    if views == [()]:
        return predictor
    data_format = standardize_data_format(data_format)
    first_in = 1 if data_format == "channels_last" else 2
    first_out = first_in + lead_axes

    def averaged(batch: np.ndarray) -> np.ndarray:
        total = None
        for view in views:
            view_in = np.flip(batch, axis=[first_in + a for a in view]) if view else batch
            out = np.asarray(predictor(np.ascontiguousarray(view_in)), dtype="float32")
            if view:
                out = np.flip(out, axis=[first_out + a for a in view])
            total = out.copy() if total is None else total + out
        return total / np.float32(len(views))

    return averaged
