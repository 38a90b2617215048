"""Aggregate the selected output slices of an SL network (paper eqs. 9-10)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_sl.utils.layout import standardize_data_format


def host_activation(y, activation: str | None, axis: int = -1) -> np.ndarray:
    """An activation on a host array, float32: NumPy (SciPy) for ``None``,
    ``"linear"``, ``"sigmoid"`` and ``"softmax"`` (over ``axis``), else the
    Keras activation of that name.

    Example:
    >>> [round(float(v), 4) for v in host_activation(np.array([0.0, 2.0]), "softmax")]
    [0.1192, 0.8808]
    """
    from scipy import special

    y = np.asarray(y, dtype="float32")
    if activation in (None, "linear"):
        return y
    if activation == "sigmoid":
        return special.expit(y).astype("float32")
    if activation == "softmax":
        return special.softmax(y, axis=axis).astype("float32")
    return np.asarray(ops.convert_to_numpy(keras.activations.get(activation)(ops.convert_to_tensor(y))), "float32")


def default_selection(depth: int, num_selected: int) -> list[int]:
    """Slices used before any selection ran: the ``num_selected`` central ones."""
    start = (depth - num_selected) // 2
    return list(range(start, start + num_selected))


@keras.saving.register_keras_serializable(package="keras_sl")
class SliceHead(keras.layers.Layer):
    """Combine per-slice logits into one prediction: ``act(sum_{z in S} P_z)``.

    The selected slice indices ``S`` (eq. 7) and the per-slice training losses
    they were chosen from (eq. 6) are non-trainable variables, so they travel
    with ``save_weights``, ``.keras`` files and presets on every backend.

    Args:
        depth: number of slices ``m`` along the lifted axis.
        num_selected: ``s``, how many slices are combined.
        activation: applied after the reduction; ``"sigmoid"`` (eq. 9),
            ``"softmax"`` or ``None`` (e.g. depth regression).
        reduction: ``"sum"`` (eq. 9) or ``"mean"`` (regression targets).
        selected_slices: initial selection; defaults to the central slices.
        data_format: layout of the slice logits, lifted axis first spatial.
        quality: the PQA score ``call(..., return_quality=True)`` gives:
            ``"dice"`` (eq. 11, :func:`keras_sl.pqa.quality`), ``"depth"``
            (relative agreement of positive slice values,
            :func:`keras_sl.depth_quality.quality`) or ``"auto"`` (``"dice"``
            with an activation, ``"depth"`` without).

    Example:
    >>> import numpy as np
    >>> head = SliceHead(depth=16, num_selected=5)
    >>> tuple(head(np.zeros((2, 16, 32, 32, 1), "float32")).shape)
    (2, 32, 32, 1)
    """

    def __init__(
        self,
        depth: int = 16,
        num_selected: int = 5,
        activation: str | None = "sigmoid",
        reduction: str = "sum",
        selected_slices=None,
        data_format: str | None = None,
        quality: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if quality not in ("auto", "dice", "depth"):
            raise ValueError(f"quality must be 'auto', 'dice' or 'depth', got {quality!r}.")
        if not 1 <= int(num_selected) <= int(depth):
            raise ValueError(
                f"num_selected must be between 1 and depth={depth}, got {num_selected}."
            )
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        self.depth = int(depth)
        self.num_selected = int(num_selected)
        self.activation = activation
        self.reduction = reduction
        self.data_format = standardize_data_format(data_format)
        self.quality = quality
        initial = (
            default_selection(self.depth, self.num_selected)
            if selected_slices is None
            else self._validate(selected_slices)
        )
        self.selected = self.add_weight(
            name="selected_slices",
            shape=(self.num_selected,),
            dtype="int32",
            initializer=keras.initializers.Constant(initial),
            trainable=False,
        )
        self.slice_losses = self.add_weight(
            name="slice_losses",
            shape=(self.depth,),
            dtype="float32",
            initializer=keras.initializers.Constant(float("nan")),
            trainable=False,
        )
        self.built = True

    @property
    def lifted_axis(self) -> int:
        return 1 if self.data_format == "channels_last" else 2

    def _validate(self, slices) -> list[int]:
        slices = [int(s) for s in np.asarray(slices).reshape(-1)]
        if len(slices) != self.num_selected:
            raise ValueError(
                f"Expected {self.num_selected} selected slices, got {len(slices)}: "
                f"{slices}. Change `num_selected` or pass that many indices."
            )
        if len(set(slices)) != len(slices) or not all(0 <= s < self.depth for s in slices):
            raise ValueError(
                f"Selected slices must be distinct indices in [0, {self.depth}), "
                f"got {slices}."
            )
        return sorted(slices)

    # -- selection state ---------------------------------------------------
    def get_selected(self) -> list[int]:
        return [int(v) for v in ops.convert_to_numpy(self.selected)]

    def set_selected(self, slices, slice_losses=None) -> None:
        """Set the selection (and optionally the per-slice losses), atomically."""
        selected = np.asarray(self._validate(slices), dtype="int32")
        if slice_losses is not None:
            losses = np.asarray(slice_losses, dtype="float32").reshape(-1)
            if losses.shape != (self.depth,):
                raise ValueError(
                    f"slice_losses must have {self.depth} entries, got {losses.shape}."
                )
            self.slice_losses.assign(losses)
        self.selected.assign(selected)

    def get_slice_losses(self) -> np.ndarray:
        return np.asarray(ops.convert_to_numpy(self.slice_losses), dtype="float32")

    @property
    def has_selection(self) -> bool:
        """True once slice losses were measured (SliceSelection ran)."""
        return bool(np.isfinite(self.get_slice_losses()).all())

    # -- forward -----------------------------------------------------------
    @property
    def quality_kind(self) -> str:
        """``"dice"`` or ``"depth"``: the PQA score this head computes."""
        if self.quality != "auto":
            return self.quality
        return "dice" if self.activation is not None else "depth"

    def call(self, slice_logits, return_quality: bool = False, return_uncertainty: bool = False):
        """Prediction (eq. 9); with ``return_quality`` also the PQA score Q
        (eq. 11, or its depth analogue); with ``return_uncertainty`` (depth
        heads) also the per-pixel spread (population std) of the selected
        slices: ``prediction[, q][, uncertainty]``."""
        prediction = self._aggregate(slice_logits)
        if not (return_quality or return_uncertainty):
            return prediction
        out = [prediction]
        if self.quality_kind == "depth":
            from keras_sl.depth_quality import slice_statistics

            if return_uncertainty and self.num_selected < 2:
                raise ValueError("The per-pixel uncertainty is the spread of the selected slices: it needs "
                                 "num_selected >= 2.")
            _, uncertainty, q = slice_statistics(slice_logits, self.selected, slice_axis=self.lifted_axis)
            if return_quality:
                out.append(q)
            if return_uncertainty:
                out.append(ops.cast(uncertainty, prediction.dtype))
            return tuple(out)
        if return_uncertainty:
            raise ValueError("return_uncertainty is for depth heads (quality='depth'); a segmentation head's "
                             "confidence is its PQA score Q (return_quality=True).")
        from keras_sl.pqa import quality

        return prediction, quality(slice_logits, self.selected, self.data_format)

    def _aggregate(self, slice_logits):
        return self.activate(self.reduce(slice_logits))

    def reduce(self, slice_logits):
        """The selected slices' sum (``"sum"``) or mean (``"mean"``), before
        the activation: the lifted axis removed."""
        picked = ops.take(slice_logits, self.selected, axis=self.lifted_axis)
        if self.reduction == "sum":
            return ops.sum(picked, axis=self.lifted_axis)
        return ops.mean(picked, axis=self.lifted_axis)

    # -- the same on host arrays (NumPy): sliding windows and TTA ----------------------
    def reduce_np(self, slice_logits) -> np.ndarray:
        """NumPy :meth:`reduce` (float32): the selected slices' sum or mean."""
        picked = np.take(np.asarray(slice_logits, "float32"), self.get_selected(), axis=self.lifted_axis)
        out = picked.sum(axis=self.lifted_axis) if self.reduction == "sum" else picked.mean(axis=self.lifted_axis)
        return out.astype("float32", copy=False)

    def activate_np(self, y) -> np.ndarray:
        """NumPy :meth:`activate` (float32)."""
        return host_activation(y, self.activation, -1 if self.data_format == "channels_last" else 1)

    def quality_np(self, slice_logits) -> np.ndarray:
        """The PQA score Q ``(B,)`` of host slice logits (:attr:`quality_kind`):
        :func:`keras_sl.pqa.quality_np` or the depth Q of
        :func:`keras_sl.depth_quality.slice_statistics_np`, float32."""
        if self.quality_kind == "depth":
            from keras_sl.depth_quality import slice_statistics_np

            q = slice_statistics_np(slice_logits, self.get_selected(), slice_axis=self.lifted_axis,
                                    spread="selected" if self.num_selected >= 2 else "all")[2]
        else:
            from keras_sl.pqa import quality_np

            q = quality_np(slice_logits, self.get_selected(), self.data_format)
        return np.asarray(q, "float32")

    def call_np(self, slice_logits, return_quality: bool = False, return_uncertainty: bool = False):
        """:meth:`call` on host arrays, in NumPy: ``prediction[, q][, uncertainty]``
        (float32), the same on every backend and compiling nothing for a new
        image size.

        Example:
        >>> head = SliceHead(depth=4, num_selected=2, activation=None, reduction="mean")
        >>> d = np.stack([np.full((1, 2, 2, 1), v, "float32") for v in (1.0, 2.0, 3.0, 4.0)], axis=1)
        >>> depth, q, spread = head.call_np(d, return_quality=True, return_uncertainty=True)
        >>> float(depth[0, 0, 0, 0]), float(spread[0, 0, 0, 0]), round(float(q[0]), 4)
        (2.5, 0.5, 0.6726)
        """
        if not (return_quality or return_uncertainty):
            return self.activate_np(self.reduce_np(slice_logits))
        if self.quality_kind == "depth":
            from keras_sl.depth_quality import slice_statistics_np

            if return_uncertainty and self.num_selected < 2:
                raise ValueError("The per-pixel uncertainty is the spread of the selected slices: it needs "
                                 "num_selected >= 2.")
            _, uncertainty, q = slice_statistics_np(slice_logits, self.get_selected(), slice_axis=self.lifted_axis,
                                                       spread="selected" if self.num_selected >= 2 else "all")
            prediction = self.activate_np(self.reduce_np(slice_logits))
            out = [prediction]
            if return_quality:
                out.append(np.asarray(q, "float32"))
            if return_uncertainty:
                out.append(np.asarray(uncertainty, "float32"))
            return tuple(out)
        if return_uncertainty:
            raise ValueError("return_uncertainty is for depth heads (quality='depth'); a segmentation head's "
                             "confidence is its PQA score Q (return_quality=True).")
        return self.activate_np(self.reduce_np(slice_logits)), self.quality_np(slice_logits)

    def slice_weights(self, dtype="float32"):
        """The reduction as weights over all ``depth`` slices: 1 (``"sum"``)
        or ``1 / num_selected`` (``"mean"``) on the selected ones, 0 elsewhere,
        read from the selection variable (so a new selection is seen)."""
        weights = ops.sum(ops.one_hot(self.selected, self.depth, dtype=dtype), axis=0)
        return weights if self.reduction == "sum" else weights / self.num_selected

    def activate(self, y):
        """The head's activation on already reduced logits (float32)."""
        y = ops.cast(y, "float32")
        if self.activation == "sigmoid":
            y = ops.sigmoid(y)
        elif self.activation == "softmax":
            ch = -1 if self.data_format == "channels_last" else 1
            y = ops.softmax(y, axis=ch)
        elif self.activation is not None:
            y = keras.activations.get(self.activation)(y)
        return y

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        del shape[self.lifted_axis]
        return tuple(shape)

    def compute_output_spec(self, slice_logits, return_quality: bool = False, return_uncertainty: bool = False):
        prediction = keras.KerasTensor(self.compute_output_shape(slice_logits.shape), dtype=self.compute_dtype)
        if not (return_quality or return_uncertainty):
            return prediction
        out = [prediction]
        if return_quality:
            out.append(keras.KerasTensor((slice_logits.shape[0],), dtype="float32"))
        if return_uncertainty:
            out.append(keras.KerasTensor(prediction.shape, dtype=self.compute_dtype))
        return tuple(out)

    def get_config(self):
        config = super().get_config()
        config.update(
            depth=self.depth,
            num_selected=self.num_selected,
            activation=self.activation,
            reduction=self.reduction,
            selected_slices=self.get_selected(),
            data_format=self.data_format,
            quality=self.quality,
        )
        return config
