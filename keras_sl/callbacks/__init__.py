"""Training callbacks: slice selection, and what makes a run resumable
(a backup that outlives ``fit``, an epoch log without repeated rows, a stop
at the first non-finite loss)."""

from keras_sl.callbacks.epoch_log import ResumableCSVLogger, truncate_epoch_log
from keras_sl.callbacks.nan_guard import NonFiniteLossError, TerminateOnNaN
from keras_sl.callbacks.slice_selection import SliceSelection, select_slices, slice_losses
from keras_sl.callbacks.training_backup import TrainingBackup, read_backup_state

__all__ = ["NonFiniteLossError", "ResumableCSVLogger", "SliceSelection", "TerminateOnNaN", "TrainingBackup",
           "read_backup_state", "select_slices", "slice_losses", "truncate_epoch_log"]
