"""The selected-slice prediction of an SL network without its unselected slices."""

from __future__ import annotations

import keras
from keras import ops

from keras_sl.blocks.residual_unit import ResidualUnit
from keras_sl.layers.slice_head import SliceHead


class SelectedSliceSum(keras.layers.Layer):
    """``act(sum_{z in S} P_z)`` (eq. 9) from the input of the backbone's last
    residual unit.

    That unit ends with a bare convolution plus a linear shortcut, so the sum
    over the selected slices moves into its kernels
    (:meth:`keras_sl.blocks.ResidualUnit.lifted_sum`): the m-slice logits are
    never computed. Exact; the weights and the selection are read from
    ``block`` and ``head`` on every call, so training, ``set_weights`` and a
    new selection are seen. Used by SL models' prediction-only graphs (not
    serialized: rebuilt from the model).

    Args:
        block: the backbone's last unit (``supports_lifted_sum``).
        head: the model's :class:`keras_sl.layers.SliceHead`.
        output_permutation: ``keras.layers.Permute`` dims from the block's
            layout (lifted axis removed) to the head's data format, applied
            before the activation; None when they agree.
    """

    def __init__(self, block: ResidualUnit, head: SliceHead, output_permutation=None, **kwargs):
        kwargs.setdefault("dtype", block.dtype_policy)
        super().__init__(**kwargs)
        if not block.supports_lifted_sum:
            raise ValueError(f"{block.name} does not end linearly on full-length slices.")
        self.block = block
        self.head = head
        self.output_permutation = None if output_permutation is None else tuple(output_permutation)

    def call(self, inputs):
        logits = self.block.lifted_sum(inputs, self.head.slice_weights(self.compute_dtype))
        if self.output_permutation is not None:  # to the head's layout before its activation (softmax axis)
            logits = ops.transpose(logits, (0, *self.output_permutation))
        return self.head.activate(logits)

    def compute_output_spec(self, inputs):
        shape = list(self.block.compute_output_shape(inputs.shape))
        del shape[self.block.units[-1].conv._lifted_position]
        if self.output_permutation is not None:
            shape = [shape[0]] + [shape[d] for d in self.output_permutation]
        return keras.KerasTensor(tuple(shape), dtype="float32")
