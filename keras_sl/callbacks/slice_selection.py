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

    When training begins, :meth:`check` runs the first batch of ``data``
    through the model and the loss, so a wrong model, loss or data fails at
    once, not after the last epoch. Selection is skipped when training ended
    on a non-finite loss. ``get_state``/``set_state`` let
    :class:`keras_sl.callbacks.TrainingBackup` carry ``history`` across an
    interrupted run (the selection itself is measured from the final
    weights, so it needs no state).

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

    # -- checks before training ------------------------------------------------------------
    def check(self, model=None) -> None:
        """Check, before training, what selection needs after it: a Spatial
        Lifting model, a matching ``num_selected``, a loss with per-slice
        values, and data whose first batch gives per-slice losses (one batch
        through the model). Raises a TypeError or ValueError that says what to
        change. Called by ``on_train_begin``."""
        model = model or self.model
        if not (hasattr(model, "slice_head") and hasattr(model, "predict_slices")):
            raise TypeError(
                f"SliceSelection selects the slices of a Spatial Lifting model (keras_sl.SLSegmenter, SLUNet, "
                f"an <encoder>_sl_<decoder> model), got a {type(model).__name__} without slices; remove the "
                "callback or train an SL model."
            )
        k = self.num_selected or model.num_selected
        if k != model.num_selected:
            raise ValueError(
                f"num_selected={k} differs from the model's num_selected="
                f"{model.num_selected}; build the model with num_selected={k}."
            )
        loss = self._loss(model)
        if hasattr(model, "_check_loader"):
            model._check_loader(self.data)
        batch = self._first_batch(model)
        if batch is None:  # a one-shot iterator: checked when selection reads it
            return
        x, y = batch
        if len(x) != len(y):
            raise ValueError(f"SliceSelection data: a batch has {len(x)} images and {len(y)} masks.")
        if getattr(model, "activation", None) == "sigmoid":
            check_binary_mask(y, "SliceSelection masks")
        _check_pair_shapes(model, x, y)
        x, y = x[: self.batch_size], y[: self.batch_size]
        already = {"preprocess": False} if hasattr(model, "preprocessor") else {}
        try:
            logits = model.predict_slices(x, verbose=0, pad=False, **already)
            per = np.asarray(ops.convert_to_numpy(loss.per_slice(y, logits)))
        except Exception as err:  # one error type on every backend (they raise different ones)
            first = (str(err).strip().splitlines() or [""])[0]
            raise ValueError(
                f"SliceSelection cannot compute per-slice losses on its data (images {tuple(x.shape)}, masks "
                f"{tuple(y.shape)}): {type(err).__name__}: {first}"
            ) from err
        if per.shape != (len(x), model.lift_depth):
            raise ValueError(
                f"SliceSelection's loss {type(loss).__name__} gave values of shape {per.shape} for {len(x)} images; "
                f"one per image and slice, {(len(x), model.lift_depth)}, is needed."
            )

    def _loss(self, model):
        from keras_sl.losses import SliceSupervision, StructureLoss

        if self.loss is not None:
            if not callable(getattr(self.loss, "per_slice", None)):
                raise TypeError(
                    f"SliceSelection(loss=...) must give per-slice values (a keras_sl.losses.SliceSupervision), "
                    f"got {type(self.loss).__name__}; wrap it: SliceSupervision({type(self.loss).__name__}())."
                )
            return self.loss
        compiled = getattr(model, "loss", None)
        if compiled is None:  # not compiled: the structure loss, as slice_losses() uses
            return SliceSupervision(StructureLoss(), data_format=model.data_format)
        if not callable(getattr(compiled, "per_slice", None)):
            raise ValueError(
                f"The model's compiled loss ({compiled!r}) gives no per-slice values, so SliceSelection cannot rank "
                "the slices by it. Compile with a keras_sl.losses.SliceSupervision loss (model.compile() uses one), "
                "or pass SliceSelection(loss=SliceSupervision(...))."
            )
        return compiled

    def _first_batch(self, model):
        data = self.data
        if not isinstance(data, (tuple, list, keras.utils.PyDataset)) and not hasattr(data, "__iter__"):
            raise TypeError(f"SliceSelection data must be (x, y) arrays, a PyDataset or an iterable of (x, y) "
                            f"batches, got {type(data).__name__}.")
        if not isinstance(data, (tuple, list, keras.utils.PyDataset)) and iter(data) is data:
            return None  # a generator: reading a batch now would use it up
        batches = _batches(data, self.batch_size, model)
        try:
            return next(iter(batches))
        except StopIteration:
            raise ValueError(
                "SliceSelection got no training samples: pass the training data as "
                "(x, y) arrays, a keras.utils.PyDataset or a tf.data.Dataset with at "
                "least one batch."
            ) from None

    # -- resumable state ---------------------------------------------------------------------
    def get_state(self) -> dict:
        """The selection history (for :class:`keras_sl.callbacks.TrainingBackup`)."""
        return {"history": [dict(h) for h in self.history]}

    def set_state(self, state: dict) -> None:
        self.history = [dict(h) for h in state.get("history", [])]

    # -- callback hooks ----------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self.check()

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epoch and _finite(logs):
            self.select()

    def on_train_end(self, logs=None):
        if not _finite(logs):
            if self.verbose:
                print("SliceSelection: training ended with a non-finite loss; no slices selected.")
            return
        if not self.every_epoch:  # with every_epoch the last epoch already selected
            self.select()


def _check_pair_shapes(model, x, y) -> None:
    """Masks must have the images' batch, height and width, and one channel per class."""
    channels_last = getattr(model, "data_format", "channels_last") == "channels_last"
    x_spatial, y_spatial = (x.shape[1:-1], y.shape[1:-1]) if channels_last else (x.shape[2:], y.shape[2:])
    y_channels = y.shape[-1] if channels_last else (y.shape[1] if y.ndim > 1 else None)
    classes = getattr(model, "num_classes", None)
    if y.ndim != x.ndim or x_spatial != y_spatial or (classes is not None and y_channels != classes):
        raise ValueError(
            f"SliceSelection data: masks of shape {tuple(y.shape)} do not fit images of shape {tuple(x.shape)}; "
            f"per-slice losses need masks with the images' height and width and {classes} channel(s) "
            f"({'(B, H, W, K)' if channels_last else '(B, K, H, W)'})."
        )


def _finite(logs) -> bool:
    return all(np.isfinite(v) for v in (logs or {}).values() if isinstance(v, (int, float, np.floating)))
