"""The structure loss' per-image sums as batched matrix products (op
``"pixel_sums"`` of :mod:`keras_sl.losses.structure_loss`).

JAX and TensorFlow: channels first, ``(B, C, [m,] *spatial)`` (with one
channel a free reshape), and each weighted sum one einsum, which XLA on the
CPU runs several times faster than the same sum as fused reductions (loss
and gradient for 4x16 slices at 256^2: JAX 75 -> 33 ms, TensorFlow 19 -> 18
ms). torch keeps the reference (its einsum and its ops on permuted views are
slower).
"""

from __future__ import annotations

from keras import ops

from keras_sl.fast.dispatch import register
from keras_sl.losses.structure_loss import PixelSums


@register("pixel_sums", "channels_first_einsum", backends=("jax", "tensorflow"),
          summary="Weighted per-image sums as channels-first einsums (loss and gradient for 4x16 slices at "
                  "256^2: JAX 75 -> 33 ms, TensorFlow 19 -> 18 ms).")
class EinsumSums(PixelSums):
    channel_axis, slice_axis = 1, 2

    def __init__(self, rank: int, slice_axes: int):
        super().__init__(rank, slice_axes)
        spatial = "".join(chr(ord("h") + i) for i in range(rank))
        slices = "m" * slice_axes
        self.equation = f"bc{slices}{spatial},bc{spatial}->bc{slices}"

    def layout(self, x):
        return ops.moveaxis(x, -1, 1)

    def weights_over_slices(self, x):
        return x  # the einsum broadcasts them

    def __call__(self, values, weights):
        return ops.einsum(self.equation, values, weights)
