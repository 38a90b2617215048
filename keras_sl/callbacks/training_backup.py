"""Back up the whole training state every epoch, atomically, and keep it until told.

Unlike ``keras.callbacks.BackupAndRestore`` (which deletes its backup when
``fit`` ends), :class:`TrainingBackup` keeps the backup after ``fit`` so that
what runs after training (slice selection, final weights, a test evaluation,
a preset) can be interrupted without losing the run; the caller removes it
with :meth:`TrainingBackup.delete` once everything is written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import keras

from keras_sl.training_state import atomic_save_weights, atomic_write_text

STATE_FILE = "state.json"
#: the files of keras.callbacks.BackupAndRestore, which older keras_sl runs used
LEGACY_WEIGHTS, LEGACY_METADATA = "latest.weights.h5", "training_metadata.json"


def _weights_name(epoch: int) -> str:
    return f"epoch_{epoch}.weights.h5"


def read_backup_state(backup_dir: str | os.PathLike) -> dict | None:
    """The backup's ``state.json`` (``{"epoch": ..., "weights": ...}``), or None
    when there is no usable backup in ``backup_dir``."""
    path = Path(backup_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(
            f"The training backup {path} is unreadable ({err}); delete {Path(backup_dir)} to start the run over."
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or "weights" not in state:
        raise ValueError(f"The training backup {path} is not a keras_sl backup; delete {Path(backup_dir)} "
                         "to start the run over.")
    return state


def _has(obj, *methods: str) -> bool:
    return all(callable(getattr(obj, m, None)) for m in methods)


def _number(value) -> float | None:
    try:
        return float(value) if not isinstance(value, (str, bytes)) else None
    except (TypeError, ValueError):
        return None


class TrainingBackup(keras.callbacks.Callback):
    """Save the training state after every epoch; restore it when ``fit`` starts.

    The state is the model's weights with the optimizer's (step count, moments),
    the epoch, and ``get_state()`` of every object in ``state`` that has one
    (e.g. a :class:`keras_sl.callbacks.SliceSelection`); objects with
    ``set_epoch(epoch)`` — a :class:`keras_sl.datasets.pipeline.EpochStream`,
    whose batches are functions of the epoch — are told the epoch training
    continues from when ``fit`` starts. Each epoch writes
    ``epoch_<n>.weights.h5`` then ``state.json``, each atomically (a kill at
    any moment leaves the previous complete backup). An epoch whose logs hold
    a non-finite value (the loss became NaN) is not backed up.

    The backup survives the end of ``fit``: call :meth:`delete` once the
    results that depend on it are written.

    Args:
        backup_dir: folder of the backup (used by nothing else).
        state: ``{name: object}`` with ``get_state() -> dict`` and
            ``set_state(dict)`` (saved and restored with the weights) and/or
            ``set_epoch(epoch)``.
        config: what identifies the run (JSON-able dict); a backup written
            with another config is refused with a clear error.
        verbose: print a line when training resumes.

    Example::

        stream = EpochStream(train, epochs=40)  # keras_sl.datasets.pipeline
        backup = TrainingBackup("run/backup", state={"data": stream})
        model.fit(stream, epochs=40, steps_per_epoch=len(train), shuffle=False, callbacks=[backup])
        ...  # selection, evaluation, saving
        backup.delete()
    """

    def __init__(self, backup_dir: str | os.PathLike, state: dict | None = None, config: dict | None = None,
                 verbose: int = 1):
        super().__init__()
        if not backup_dir:
            raise ValueError("TrainingBackup needs a backup folder, got an empty path.")
        self.backup_dir = Path(backup_dir)
        self.state_objects = dict(state or {})
        for name, obj in self.state_objects.items():
            if not (_has(obj, "get_state", "set_state") or _has(obj, "set_epoch")):
                raise TypeError(f"TrainingBackup state {name!r} ({type(obj).__name__}) needs get_state() and "
                                "set_state(state) methods, or set_epoch(epoch).")
        self.config = json.loads(json.dumps(config)) if config is not None else None
        self.verbose = verbose
        #: epoch training (re)starts from: 0, or the epoch of the restored backup
        self.initial_epoch = 0
        #: training seconds of every attempt so far, up to the last backed-up epoch
        self.train_seconds = 0.0
        self._restored_seconds = 0.0
        self._start = None

    @property
    def restored_seconds(self) -> float:
        """Training seconds of the earlier attempts (0 without a restored backup)."""
        return self._restored_seconds

    # -- restore -----------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        self.restore()

    def restore(self) -> int:
        """Load the backup into the model (and the state objects); returns the
        epoch training continues from (0 without a backup)."""
        self._remove_partial_files()
        state = read_backup_state(self.backup_dir)
        if state is None:
            state = self._legacy_state()
        if state is None:
            self.initial_epoch, self._restored_seconds = 0, 0.0
            self.model._initial_epoch = None  # no stale epoch from an earlier fit of this model
            self._set_epochs()
            return 0
        self._check_config(state.get("config"))
        weights = self.backup_dir / state["weights"]
        if not weights.is_file():
            raise ValueError(f"The training backup {self.backup_dir} names {weights.name}, which is missing; "
                             f"delete {self.backup_dir} to start the run over.")
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its variables must exist to be loaded
        model.load_weights(weights)
        saved = state.get("state", {})
        for name, obj in self.state_objects.items():
            if name in saved and _has(obj, "set_state"):
                obj.set_state(saved[name])
        self.initial_epoch = int(state["epoch"])
        self._set_epochs()
        self._restored_seconds = float(state.get("train_seconds", 0.0))
        self.train_seconds = self._restored_seconds
        model._initial_epoch = self.initial_epoch  # read by every backend's fit, as BackupAndRestore does
        if self.verbose:
            print(f"Resuming from the backup of epoch {self.initial_epoch} in {self.backup_dir}.")
        return self.initial_epoch

    def _set_epochs(self) -> None:
        for obj in self.state_objects.values():
            if _has(obj, "set_epoch"):
                obj.set_epoch(self.initial_epoch)

    def _legacy_state(self) -> dict | None:
        """A ``keras.callbacks.BackupAndRestore`` backup (older keras_sl runs) as a state."""
        weights, meta = self.backup_dir / LEGACY_WEIGHTS, self.backup_dir / LEGACY_METADATA
        if not (weights.is_file() and meta.is_file()):
            return None
        try:
            epoch = int(json.loads(meta.read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        print(f"Resuming from the keras.callbacks.BackupAndRestore backup of epoch {epoch} in {self.backup_dir} "
              "(written by an older keras_sl): the weights and optimizer come back, the data order of the "
              "remaining epochs differs from an uninterrupted run.")
        return {"epoch": epoch, "weights": LEGACY_WEIGHTS}

    def _check_config(self, saved) -> None:
        if self.config is None or saved is None or saved == self.config:
            return
        keys = sorted(set(saved) | set(self.config))
        diff = ", ".join(f"{k}: {saved.get(k)!r} in the backup, {self.config.get(k)!r} now"
                         for k in keys if saved.get(k) != self.config.get(k))
        raise ValueError(
            f"The training backup in {self.backup_dir} belongs to another configuration ({diff}). "
            "Rerun with the same settings to resume it, use another output folder, or start over "
            "(overwrite=True; keras-sl train --force)."
        )

    def _remove_partial_files(self) -> None:
        if self.backup_dir.is_dir():
            for path in self.backup_dir.glob("*.partial*"):
                path.unlink(missing_ok=True)

    # -- save --------------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if _number(v) is not None and not math.isfinite(_number(v))}
        if bad:
            print(f"TrainingBackup: epoch {epoch + 1} not backed up ({', '.join(f'{k}={v}' for k, v in bad.items())}); "
                  f"the backup of epoch {self._saved_epoch()} in {self.backup_dir} stays.")
            return
        self.train_seconds = self._restored_seconds + (time.perf_counter() - self._start if self._start else 0.0)
        self.save(epoch + 1)

    def _saved_epoch(self) -> int:
        state = read_backup_state(self.backup_dir)
        return state["epoch"] if state else 0

    def save(self, epoch: int) -> None:
        """Write the backup of ``epoch`` completed epochs (atomically)."""
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        name = _weights_name(epoch)
        atomic_save_weights(self.model, self.backup_dir / name)
        state = {
            "epoch": int(epoch), "weights": name, "train_seconds": round(self.train_seconds, 3),
            "config": self.config,
            "state": {key: obj.get_state() for key, obj in self.state_objects.items() if _has(obj, "get_state")},
        }
        atomic_write_text(self.backup_dir / STATE_FILE, json.dumps(state, indent=1))
        for old in [*self.backup_dir.glob("epoch_*.weights.h5"), self.backup_dir / LEGACY_WEIGHTS,
                    self.backup_dir / LEGACY_METADATA]:
            if old.name != name:
                old.unlink(missing_ok=True)

    # -- end ---------------------------------------------------------------------------------
    def on_train_end(self, logs=None):
        """The backup stays (see :meth:`delete`); the model's next ``fit`` starts at its own epoch."""
        self.model._initial_epoch = None

    def exists(self) -> bool:
        """Whether a backup is on disk."""
        return (self.backup_dir / STATE_FILE).is_file()

    def delete(self) -> None:
        """Remove the backup folder (once the run's results are written)."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)
