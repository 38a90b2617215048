"""A CSV epoch log that a resumed run continues without repeating rows."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import keras

from keras_sl.training_state import atomic_write_text


def truncate_epoch_log(path: str | os.PathLike, first_epoch: int, separator: str = ",") -> int:
    """Drop the rows of epochs ``>= first_epoch`` (and earlier copies of a
    repeated epoch) from a CSV log with an ``epoch`` column; returns the rows
    kept. A log left without rows is removed (the next run writes a fresh header)."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=separator))
    if not rows:
        path.unlink()
        return 0
    header, body = rows[0], rows[1:]
    if "epoch" not in header:
        raise ValueError(f"{path} has no 'epoch' column; it is not a Keras CSV log. Move it away and rerun.")
    column = header.index("epoch")
    latest = {}  # epoch -> its last row (a log of an older keras_sl may repeat epochs)
    for row in body:
        if row and row[column].strip().isdigit() and int(row[column]) < first_epoch:
            latest[int(row[column])] = row
    kept = [latest[e] for e in sorted(latest)]
    if not kept:
        path.unlink()
        return 0
    if kept != body:
        lines = []
        writer = csv.writer(_Lines(lines), delimiter=separator)  # excel dialect, as CSVLogger writes
        writer.writerow(header)
        writer.writerows(kept)
        atomic_write_text(path, "".join(lines))
    return len(kept)


class _Lines:
    def __init__(self, lines: list):
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.append(text)


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """``keras.callbacks.CSVLogger(filename, append=True)`` for resumable runs:
    when the first epoch runs, the rows of that epoch and later ones (written
    by an interrupted attempt) are dropped first, so each epoch has one row.

    Put it before :class:`keras_sl.callbacks.TrainingBackup` in the callback
    list: an epoch's row is then written before its backup, so a kill between
    the two re-runs that epoch (its row is replaced) instead of losing the row.
    """

    def __init__(self, filename, separator: str = ","):
        super().__init__(filename, separator=separator, append=True)
        self._opened = False

    def on_train_begin(self, logs=None):
        self._opened = False  # opened at the first epoch, once it is known

    def on_epoch_begin(self, epoch, logs=None):
        if not self._opened:
            truncate_epoch_log(self.filename, epoch, self.sep)
            super().on_train_begin(logs)
            self._opened = True

    def on_train_end(self, logs=None):
        if self._opened:
            super().on_train_end(logs)
        self._opened = False
