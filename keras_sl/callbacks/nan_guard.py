"""Stop training at the first non-finite loss, with a message that says what to do."""

from __future__ import annotations

import math

import keras


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (raised by :class:`TerminateOnNaN`)."""


class TerminateOnNaN(keras.callbacks.TerminateOnNaN):
    """Stop ``fit`` as soon as a batch loss is NaN or infinite.

    Like ``keras.callbacks.TerminateOnNaN(raise_error=True)``: it raises
    :class:`NonFiniteLossError` at once, so the epoch is not finished and
    nothing runs ``on_epoch_end`` / ``on_train_end`` with broken weights — a
    :class:`keras_sl.callbacks.TrainingBackup` keeps the last good epoch.
    The message names the epoch and batch, and ``hint`` (e.g. where the
    backup is and how to resume) is appended to it.

    Example::

        model.fit(train, epochs=40, callbacks=[TerminateOnNaN(hint="Lower the learning rate.")])
    """

    def __init__(self, hint: str = ""):
        super().__init__()
        self.hint = hint
        self._epoch = 0
        #: ``{"epoch", "batch", "loss"}`` of the stop, or None
        self.stopped = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(keras.ops.convert_to_numpy(loss)) if not isinstance(loss, (int, float)) else float(loss)
        if math.isfinite(loss):
            return
        self.stopped = {"epoch": self._epoch + 1, "batch": int(batch) + 1, "loss": loss}
        raise NonFiniteLossError(
            f"Training stopped: the loss became {loss} in epoch {self._epoch + 1}, batch {batch + 1}; the weights "
            "are no longer finite. Check the data for NaN/Inf pixels or masks and lower the learning rate."
            + (f" {self.hint}" if self.hint else "")
        )
