"""Pick the s slices with the lowest mean training loss (paper eqs. 6-7)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_sl.utils.checks import check_binary_mask


def _images(x) -> bool:
    """A batch array, or a list (not a tuple: that is a batch) of image arrays."""
    return isinstance(x, np.ndarray) or (isinstance(x, list) and bool(x) and all(isinstance(i, np.ndarray) for i in x))


def _batches(data, batch_size: int, model=None):
    """Yield network-ready ``(x, y)`` numpy batches from raw arrays (through the
    model's preprocessor, as ``fit`` does), a PyDataset or an iterable (fed as
    they are, like ``fit`` feeds them)."""
    if isinstance(data, (tuple, list)) and len(data) >= 2 and _images(data[0]):
        x, y = data[0], data[1]  # arrays, or lists of images (as fit takes them)
        if len(x) != len(y):
            raise ValueError(f"x and y have different lengths: {len(x)} and {len(y)}.")
        for i in range(0, len(x), batch_size):
            bx, by = x[i : i + batch_size], y[i : i + batch_size]
            if hasattr(model, "prepare_training_arrays"):
                bx, by = model.prepare_training_arrays(bx, by)
            yield np.asarray(bx), np.asarray(by)
        return
    if isinstance(data, keras.utils.PyDataset):
        for i in range(len(data)):
            batch = data[i]
            yield np.asarray(batch[0]), np.asarray(batch[1])
        return
    for batch in data:  # tf.data.Dataset, torch DataLoader, generators
        x, y = batch[0], batch[1]
        yield np.asarray(ops.convert_to_numpy(x)), np.asarray(ops.convert_to_numpy(y))


def slice_losses(model, data, loss=None, batch_size: int = 8) -> np.ndarray:
    """Mean loss of every output slice over ``data`` (eq. 6), shape ``(m,)``.

    ``loss`` is a :class:`keras_sl.losses.SliceSupervision`; by default the
    model's compiled loss (or the structure loss, if it is not one).
    """
    from keras_sl.losses import SliceSupervision, StructureLoss

    if loss is None:
        loss = getattr(model, "loss", None)
    if not isinstance(loss, SliceSupervision):
        loss = SliceSupervision(StructureLoss(), data_format=model.data_format)
    total, count = None, 0
    if hasattr(model, "_check_loader"):
        model._check_loader(data)
    for x, y in _batches(data, batch_size, model):
        if getattr(model, "activation", None) == "sigmoid":
            check_binary_mask(y, "SliceSelection masks")
        already = {"preprocess": False} if hasattr(model, "preprocessor") else {}  # batches are network-ready
        logits = model.predict_slices(x, verbose=0, pad=False, **already)
        per = np.asarray(ops.convert_to_numpy(loss.per_slice(y, logits)), dtype="float64")
        total = per.sum(0) if total is None else total + per.sum(0)
        count += per.shape[0]
    if count == 0:
        raise ValueError(
            "SliceSelection got no training samples: pass the training data as "
            "(x, y) arrays, a keras.utils.PyDataset or a tf.data.Dataset with at "
            "least one batch."
        )
    return (total / count).astype("float32")


def select_slices(losses, num_selected: int) -> list[int]:
    """Indices of the ``num_selected`` lowest losses (eq. 7), ties by index.

    Example:
    >>> select_slices([0.5, 0.1, 0.3, 0.2], 2)
    [1, 3]
    """
    losses = np.asarray(losses, dtype="float64")
    if not np.all(np.isfinite(losses)):
        raise ValueError(f"Slice losses must be finite to select slices, got {losses}.")
    order = np.argsort(losses, kind="stable")
    return sorted(int(i) for i in order[:num_selected])


class SliceSelection(keras.callbacks.Callback):
    """After training, store the s slices with the lowest mean training loss.

    At the end of ``fit`` (and whenever :meth:`select` is called) the model is
    run on ``data``, each slice's loss is averaged over all samples (eq. 6),
    and the ``num_selected`` best slices become ``model.selected_slices``
    (eq. 7), saved with the model. The per-slice losses are kept in
    ``model.slice_losses`` and ``self.history``.

    Args:
        data: training data, ``(x, y)`` arrays, a ``PyDataset`` or a dataset
            yielding ``(x, y)`` batches (no shuffling or augmentation needed).
        num_selected: s; defaults to the model's ``num_selected``.
        loss: a ``SliceSupervision`` loss; defaults to the compiled loss.
        batch_size: batch size used for array data.
        every_epoch: also select after every epoch (costs one pass over data).

    Example::

        model.fit(x, y, epochs=40, callbacks=[SliceSelection((x, y))])
        model.selected_slices  # e.g. [3, 4, 5, 6, 7]
    """

    def __init__(self, data, num_selected: int | None = None, loss=None, batch_size: int = 8, every_epoch: bool = False, verbose: int = 1):
        super().__init__()
        if data is None or (isinstance(data, (tuple, list)) and len(data) >= 1 and hasattr(data[0], "__len__") and len(data[0]) == 0):
            raise ValueError(
                "SliceSelection needs the training data (x, y) to measure per-slice "
                "losses, but got empty data."
            )
        self.data = data
        self.num_selected = num_selected
        self.loss = loss
        self.batch_size = int(batch_size)
        self.every_epoch = bool(every_epoch)
        self.verbose = verbose
        self.history: list[dict] = []

    def select(self, model=None) -> list[int]:
        """Measure per-slice losses now and update the model's selection."""
        model = model or self.model
        losses = slice_losses(model, self.data, self.loss, self.batch_size)
        k = self.num_selected or model.num_selected
        if k != model.num_selected:
            raise ValueError(
                f"num_selected={k} differs from the model's num_selected="
                f"{model.num_selected}; build the model with num_selected={k}."
            )
        chosen = select_slices(losses, k)
        model.slice_head.set_selected(chosen, losses)
        self.history.append({"selected": chosen, "slice_losses": losses.tolist()})
        if self.verbose:
            print(f"SliceSelection: selected slices {chosen} (mean losses "
                  f"{', '.join(f'{losses[i]:.4f}' for i in chosen)})")
        return chosen

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epoch:
            self.select()

    def on_train_end(self, logs=None):
        if not self.every_epoch:  # with every_epoch the last epoch already selected
            self.select()
