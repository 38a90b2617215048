"""TrainingBackup, ResumableCSVLogger and TerminateOnNaN on a tiny conv net (fast, in-process).

An interruption is simulated by an exception from a callback at a named point:
the files on disk are then what a kill at that point leaves (everything is
written atomically; tests/test_training_resume.py kills real runs with SIGKILL).
"""

import csv
import json

import keras
import numpy as np
import pytest

from keras_sl.callbacks import (NonFiniteLossError, ResumableCSVLogger, SliceSelection, TerminateOnNaN,
                                TrainingBackup, read_backup_state, truncate_epoch_log)
from keras_sl.data import make_cells
from keras_sl.datasets import SegmentationLoader
from keras_sl.datasets.pipeline import EpochStream

EPOCHS = 3


class Interrupt(Exception):
    """Stands for a kill at a named point."""


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch=None):
        super().__init__()
        self.epoch, self.batch, self._current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.batch is not None and (self._current, batch) == (self.epoch, self.batch):
            raise Interrupt(f"mid-epoch {self.epoch}")

    def on_epoch_end(self, epoch, logs=None):
        if self.batch is None and epoch == self.epoch:
            raise Interrupt(f"after epoch {epoch}")


class ArrayDataset:
    """The minimum SegmentationLoader reads: ``load(sample) -> (image, mask)``."""

    def __init__(self, n=10, size=16):
        self.x, self.y = make_cells(n, size=size, seed=5)

    def load(self, i):
        return self.x[i], self.y[i]


def make_run(seed=0):
    """A fresh model and the stream of an augmenting loader, as a new process would build them."""
    keras.utils.set_random_seed(seed)
    data = ArrayDataset()
    loader = SegmentationLoader(data, list(range(10)), batch_size=4, image_size=(16, 16), augment=True,
                                scales=(0.75, 1.0, 1.25), seed=seed, cache=True, workers=2)  # ignored by EpochStream
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                              keras.layers.Conv2D(1, 1)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.BinaryCrossentropy(from_logits=True))
    return model, loader


def fit(model, loader, callbacks, epochs=EPOCHS, **kwargs):
    """``fit`` as train_segmentation runs it: on the EpochStream of the loader."""
    stream = EpochStream(loader, epochs)
    for cb in callbacks:
        if isinstance(cb, TrainingBackup):
            cb.state_objects.setdefault("data", stream)
    return model.fit(stream, epochs=epochs, steps_per_epoch=len(loader), shuffle=False, verbose=0,
                     callbacks=callbacks, **kwargs)


def weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def log_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    model, loader = make_run()
    fit(model, loader, [ResumableCSVLogger(tmp / "log.csv"), TrainingBackup(tmp / "backup", verbose=0)])
    return weights(model), log_rows(tmp / "log.csv")


@pytest.mark.parametrize("point", [(0, None), (1, 1)], ids=["between-epochs", "mid-epoch"])
def test_resume_reproduces_uninterrupted_run_exactly(tmp_path, uninterrupted, point):
    model, loader = make_run()
    callbacks = [ResumableCSVLogger(tmp_path / "log.csv"), TrainingBackup(tmp_path / "backup", verbose=0),
                 InterruptAt(*point)]
    with pytest.raises(Interrupt):
        fit(model, loader, callbacks)
    # A new "process": fresh model (other initial weights would do too) and loader.
    model, loader = make_run()
    backup = TrainingBackup(tmp_path / "backup", verbose=0)
    history = fit(model, loader, [ResumableCSVLogger(tmp_path / "log.csv"), backup])
    done = point[0] + (1 if point[1] is None else 0)
    assert backup.initial_epoch == done
    assert len(history.history.get("loss", [])) == EPOCHS - done
    expected, expected_log = uninterrupted
    for got, want in zip(weights(model), expected):
        np.testing.assert_array_equal(got, want)  # bit-identical on the CPU
    rows = log_rows(tmp_path / "log.csv")
    assert [r["epoch"] for r in rows] == [str(e) for e in range(EPOCHS)]  # one row per epoch
    assert rows == expected_log


def test_keras_backup_without_data_state_differs(tmp_path, uninterrupted):
    """The test above can see a lost RNG/data state: Keras' BackupAndRestore
    on the loader itself resumes the weights but restarts the loader's epoch
    (and fit's default batch shuffle draws from Python's global RNG)."""
    model, loader = make_run()
    with pytest.raises(Interrupt):
        model.fit(loader, epochs=EPOCHS, verbose=0,
                  callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "b")), InterruptAt(1)])
    model, loader = make_run()
    model.fit(loader, epochs=EPOCHS, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "b"))])
    assert not all(np.array_equal(a, b) for a, b in zip(weights(model), uninterrupted[0]))


def test_epoch_stream_batches_are_functions_of_their_index():
    _, loader = make_run()
    stream = EpochStream(loader, epochs=3)
    n = len(loader)
    assert len(stream) == 3 * n and stream.preprocessor is loader.preprocessor
    first = [stream[i] for i in range(len(stream))]
    for i in (2 * n + 1, 0, n):  # any order, any number of times
        np.testing.assert_array_equal(stream[i][0], first[i][0])
    stream.set_epoch(1)  # a run resumed after epoch 1 starts with epoch 1's batches
    np.testing.assert_array_equal(stream[0][0], first[n][0])
    assert not np.array_equal(first[0][0], first[n][0])  # epochs differ (order, augmentation)
    assert loader.epoch == 0  # the loader's own state is untouched
    with pytest.raises(IndexError):
        loader.batch(0, n)


def test_backup_outlives_fit_and_is_deleted_on_request(tmp_path):
    model, loader = make_run()
    backup = TrainingBackup(tmp_path / "backup", config={"run": 1}, verbose=0)
    fit(model, loader, [backup], epochs=2)
    state = read_backup_state(tmp_path / "backup")  # keras.callbacks.BackupAndRestore deletes it here
    assert state["epoch"] == 2 and state["config"] == {"run": 1}
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == ["epoch_2.weights.h5", "state.json"]
    # Resuming a finished fit trains nothing and restores the weights.
    model2, loader2 = make_run()
    model2.set_weights([w + 1.0 for w in model2.get_weights()])
    history = fit(model2, loader2, [TrainingBackup(tmp_path / "backup", verbose=0)], epochs=2)
    assert history.history == {}
    for a, b in zip(weights(model2), weights(model)):
        np.testing.assert_array_equal(a, b)
    backup.delete()
    assert not (tmp_path / "backup").exists()


def test_backup_of_another_configuration_is_refused(tmp_path):
    model, loader = make_run()
    fit(model, loader, [TrainingBackup(tmp_path / "backup", config={"resolution": 16}, verbose=0)], epochs=1)
    model, loader = make_run()
    with pytest.raises(ValueError, match=r"another configuration \(resolution: 16 in the backup, 32 now\).*--force"):
        fit(model, loader, [TrainingBackup(tmp_path / "backup", config={"resolution": 32}, verbose=0)])


def test_unreadable_backup_names_the_file(tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"state\.json is unreadable.*delete"):
        read_backup_state(tmp_path / "backup")


def test_state_objects_need_get_and_set_state(tmp_path):
    with pytest.raises(TypeError, match="get_state.*set_epoch"):
        TrainingBackup(tmp_path, state={"data": object()})


def test_terminate_on_nan_keeps_the_last_good_epoch(tmp_path):
    model, loader = make_run()

    class PoisonAt(keras.callbacks.Callback):  # NaN weights from epoch 2 on, as a diverging run gets
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                model.layers[-1].kernel.assign(np.full((1, 1, 4, 1), np.nan, "float32"))

    callbacks = [ResumableCSVLogger(tmp_path / "log.csv"), TrainingBackup(tmp_path / "backup", verbose=0),
                 TerminateOnNaN(hint="Resume hint."), PoisonAt()]
    with pytest.raises(NonFiniteLossError, match=r"loss became nan in epoch 3, batch 1.*Resume hint\.$"):
        fit(model, loader, callbacks)
    assert isinstance(callbacks[2], keras.callbacks.TerminateOnNaN)
    assert callbacks[2].stopped == {"epoch": 3, "batch": 1, "loss": pytest.approx(np.nan, nan_ok=True)}
    assert read_backup_state(tmp_path / "backup")["epoch"] == 2  # the last good epoch
    model2, _ = make_run()
    model2.optimizer.build(model2.trainable_variables)
    model2.load_weights(tmp_path / "backup" / "epoch_2.weights.h5")
    assert all(np.isfinite(w).all() for w in weights(model2))
    assert [r["epoch"] for r in log_rows(tmp_path / "log.csv")] == ["0", "1"]  # no NaN row


def test_an_epoch_with_a_nan_loss_is_not_backed_up(tmp_path, capsys):
    model, loader = make_run()
    backup = TrainingBackup(tmp_path / "backup", verbose=0)
    backup.set_model(model)
    backup.on_train_begin()
    backup.on_epoch_end(0, {"loss": 0.5})
    backup.on_epoch_end(1, {"loss": float("nan")})
    assert read_backup_state(tmp_path / "backup")["epoch"] == 1
    assert "epoch 2 not backed up (loss=nan)" in capsys.readouterr().out


def test_truncate_epoch_log(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\r\n0,1.0\r\n1,0.7\r\n2,0.4\r\n1,0.5\r\n")  # epoch 1 repeated by an old resume
    assert truncate_epoch_log(log, 2) == 2
    assert log.read_bytes() == b"epoch,loss\r\n0,1.0\r\n1,0.5\r\n"  # the last row of each epoch, as CSVLogger writes
    assert truncate_epoch_log(log, 0) == 0 and not log.exists()
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no 'epoch' column"):
        truncate_epoch_log(tmp_path / "other.csv", 1)


def test_slice_selection_history_is_part_of_the_state():
    cb = SliceSelection((np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 1))), every_epoch=True, verbose=0)
    cb.history = [{"selected": [1, 2], "slice_losses": [0.1, 0.2, 0.3]}]
    state = json.loads(json.dumps(cb.get_state()))
    other = SliceSelection((np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 1))), every_epoch=True, verbose=0)
    other.set_state(state)
    assert other.history == cb.history


def test_a_keras_backup_and_restore_backup_is_resumed(tmp_path, capsys):
    """Runs started by an older keras_sl (keras.callbacks.BackupAndRestore) are not lost."""
    model, loader = make_run()
    with pytest.raises(Interrupt):
        model.fit(loader, epochs=EPOCHS, verbose=0,
                  callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), InterruptAt(0)])
    model, loader = make_run()
    backup = TrainingBackup(tmp_path / "backup", verbose=0)
    history = fit(model, loader, [backup])
    assert backup.initial_epoch == 1 and len(history.history["loss"]) == EPOCHS - 1
    assert "BackupAndRestore backup of epoch 1" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == ["epoch_3.weights.h5", "state.json"]
