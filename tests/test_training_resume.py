"""Training that loses nothing (issue 21, bad case 7 and the training weak cases).

``train_segmentation`` on a tiny SL-UNet and a tiny dataset written to disk in
the Kvasir-SEG layout (synthetic cells, 32x32). The kill tests run the real
command in a subprocess, stop it at a named point (the child writes a marker
file and sleeps there: no timing races), SIGKILL it, rerun it, and compare
everything it wrote with an uninterrupted run: final weights, selected slices,
slice losses, test metrics, per-image results, the epoch log and the preset.
The comparison is exact (bit-identical) on the CPU on every backend: the
data order and augmentation are functions of (seed, epoch) and the backup
holds the weights, the optimizer state and the loader's epoch.

Run as a script, this file is the child process of the kill tests.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EPOCHS, BATCH, RESOLUTION, IMAGES = 3, 4, 32, 16
TINY = "tiny_sl_unet_resume"


# -- the data and the model ------------------------------------------------------------------
def make_dataset(root: Path, n: int = IMAGES) -> Path:
    """``n`` synthetic cell images with masks, as Kvasir-SEG stores them."""
    from PIL import Image

    from keras_sl.data import make_cells

    x, y = make_cells(n, size=RESOLUTION, seed=3)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((x[i] * 255).astype("uint8")).save(root / "images" / f"cell{i:02d}.png")
        Image.fromarray((y[i, ..., 0] * 255).astype("uint8")).save(root / "masks" / f"cell{i:02d}.png")
    return root


def register_tiny_model() -> None:
    from keras_sl import registry
    from keras_sl.registry import _build_sl_unet

    registry.register(TINY, _build_sl_unet, replace=True, family=None, input_multiple=2,
                      arguments={"levels": 2, "num_res_units": 1, "width": 4, "lift_depth": 4, "num_selected": 2})


def train(data: str, out: str, preset: str | None = None, **kwargs) -> dict:
    from keras_sl.training import train_segmentation

    return train_segmentation("kvasir", data, out, model=TINY, resolution=RESOLUTION, epochs=EPOCHS,
                              batch_size=BATCH, preset_dir=preset, **kwargs)


# -- the child process ---------------------------------------------------------------------------
def _pause(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:  # the parent SIGKILLs us here
        time.sleep(60)


def child(data: str, out: str, preset: str, point: str, marker: str) -> None:
    import keras

    from keras_sl import training, training_state
    from keras_sl.callbacks import slice_selection

    register_tiny_model()

    class PauseAt(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if point == "mid_epoch" and (self.epoch, batch) == (1, 1):
                _pause(marker)

        def on_epoch_end(self, epoch, logs=None):  # after the backup of this epoch
            if point == "between_epochs" and epoch == 1:
                _pause(marker)

        def on_train_end(self, logs=None):  # after the last epoch, before the selection
            if point == "after_last_epoch":
                _pause(marker)

    if point == "during_selection":
        original = slice_selection.slice_losses

        def paused_slice_losses(*args, **kwargs):
            _pause(marker)
            return original(*args, **kwargs)

        slice_selection.slice_losses = paused_slice_losses
    if point == "during_evaluation":
        training.evaluate_segmentation = lambda *args, **kwargs: _pause(marker)
    if point in ("moving_preset", "before_results"):
        update = training_state.Progress.update

        def paused_update(self, **values):
            update(self, **values)
            if values.get("preset") == ("moving" if point == "moving_preset" else "done"):
                _pause(marker)

        training_state.Progress.update = paused_update
    train(data, out, preset, verbose=1, callbacks=[PauseAt()])


# -- the parent side -------------------------------------------------------------------------------
def run_child(data: Path, out: Path, preset: Path, point: str = "none", timeout: float = 900) -> str:
    """Run the child to completion (``point="none"``) or until it pauses at
    ``point``, then SIGKILL it. Returns its output."""
    marker = out.parent / f"{out.name}.{point}.paused"
    marker.unlink(missing_ok=True)
    log = out.parent / f"{out.name}.{point}.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_SL_MALLOC_TUNING": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as stream:
        proc = subprocess.Popen([sys.executable, __file__, str(data), str(out), str(preset), point, str(marker)],
                                stdout=stream, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        try:
            if point == "none":
                proc.wait(timeout=timeout)
            else:
                while not marker.exists():
                    if proc.poll() is not None:
                        pytest.fail(f"the child ended before {point}:\n{log.read_text()[-3000:]}")
                    if time.monotonic() > deadline:
                        pytest.fail(f"the child did not reach {point} in {timeout} s")
                    time.sleep(0.05)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                assert proc.returncode == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    if point == "none":
        assert proc.returncode == 0, text[-3000:]
    return text


def read_weights(path: Path) -> dict:
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def log_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def comparable(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in ("train_seconds", "command")}


def assert_same_run(out: Path, preset: Path, ref_out: Path, ref_preset: Path) -> None:
    """Everything the run wrote equals the uninterrupted run's, bit for bit."""
    results = json.loads((out / "results.json").read_text())
    reference = json.loads((ref_out / "results.json").read_text())
    assert comparable(results) == comparable(reference)  # metrics, selected slices, slice losses
    assert (out / "per_image.json").read_text() == (ref_out / "per_image.json").read_text()
    got, want = read_weights(out / "final.weights.h5"), read_weights(ref_out / "final.weights.h5")
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    rows = log_rows(out / "log.csv")
    assert [r["epoch"] for r in rows] == [str(e) for e in range(EPOCHS)]  # one row per epoch
    assert rows == log_rows(ref_out / "log.csv")
    meta, ref_meta = (json.loads((p / "metadata.json").read_text()) for p in (preset, ref_preset))
    for m in (meta, ref_meta):
        m["training"].pop("train_seconds")
    assert meta == ref_meta  # includes weights_sha256 of the preset's weights
    # Nothing left behind: no backup, no partial files.
    assert not (out / "backup").exists()
    assert not [p for p in out.parent.rglob("*partial*")]


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("cells"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """An uninterrupted run, in a child process like the interrupted ones."""
    root = tmp_path_factory.mktemp("reference")
    run_child(data_dir, root / "run", root / "preset")
    return root / "run", root / "preset"


@pytest.fixture
def tiny_model():
    from keras_sl import registry

    register_tiny_model()
    yield TINY
    registry.unregister(TINY)


# -- a finished run ---------------------------------------------------------------------------------
def finished_results(**overrides) -> dict:
    return {"dataset": "kvasir", "model_name": TINY, "resolution": RESOLUTION, "epochs": EPOCHS,
            "batch_size": BATCH, "seed": 0, "test": {"dice": 0.75, "iou": 0.6, "n": 2}, **overrides}


@pytest.fixture
def no_training(monkeypatch):
    """Fail if train_segmentation gets as far as reading the dataset."""

    def refuse(*args, **kwargs):
        raise AssertionError("train_segmentation started training")

    monkeypatch.setattr("keras_sl.training.get_dataset", refuse)


def test_a_finished_run_is_not_trained_again(tmp_path, tiny_model, no_training, capsys):
    stored = finished_results()
    (tmp_path / "results.json").write_text(json.dumps(stored))
    (tmp_path / "log.csv").write_text("epoch,loss\n0,1\n1,1\n2,1\n")
    assert train(str(tmp_path / "data"), str(tmp_path), verbose=1) == stored
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "holds a finished run (test Dice 0.7500); not training again" in lines[0]
    assert "overwrite=True (keras-sl train --force)" in lines[0]
    assert (tmp_path / "log.csv").read_text() == "epoch,loss\n0,1\n1,1\n2,1\n"


def test_finished_results_of_other_settings_are_refused(tmp_path, tiny_model, no_training):
    (tmp_path / "results.json").write_text(json.dumps(finished_results(epochs=40)))
    with pytest.raises(ValueError, match=r"finished results of another run \(epochs: 40 there, 3 now\).*--force"):
        train(str(tmp_path / "data"), str(tmp_path))


def test_malformed_results_name_the_file(tmp_path, tiny_model, no_training):
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(ValueError, match=r"results\.json is not valid JSON.*--force"):
        train(str(tmp_path / "data"), str(tmp_path))


def test_overwrite_starts_over(tmp_path, tiny_model, no_training):
    for name in ("results.json", "per_image.json", "final.weights.h5", "log.csv", "notes.txt"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "state.json").write_text("{}")
    with pytest.raises(AssertionError, match="started training"):
        train(str(tmp_path / "data"), str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # only what the run wrote is removed


def test_another_preset_is_refused_before_training(tmp_path, tiny_model, no_training):
    preset = tmp_path / "preset"
    preset.mkdir()
    (preset / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="already holds a preset.*--force"):
        train(str(tmp_path / "data"), str(tmp_path / "run"), str(preset))
    (preset / "config.json").unlink()
    (preset / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds other files"):
        train(str(tmp_path / "data"), str(tmp_path / "run"), str(preset), overwrite=True)


def test_table3_force_retrains(monkeypatch):
    sys.path.insert(0, str(REPO / "recipes"))
    try:
        import table3
    finally:
        sys.path.remove(str(REPO / "recipes"))
    calls = []
    monkeypatch.setattr(table3, "train_segmentation", lambda *a, **k: calls.append(k))
    table3.main(["--dataset", "kvasir", "--data", "d", "--out", "o"])
    table3.main(["--dataset", "kvasir", "--data", "d", "--out", "o", "--force"])
    assert [c["overwrite"] for c in calls] == [False, True]


# -- real (tiny) training, in-process -----------------------------------------------------------------
class Interrupt(Exception):
    """Stands for a kill (the kill tests below use SIGKILL)."""


def test_a_failure_after_fit_keeps_the_backup_and_the_rerun_does_not_retrain(tmp_path, data_dir, tiny_model,
                                                                              monkeypatch, capsys):
    """Bad case 7: Keras' BackupAndRestore deleted the backup when fit ended,
    before slice selection: an interruption there lost the whole run."""
    from keras_sl.callbacks import slice_selection

    original = slice_selection.slice_losses

    def interrupted(*args, **kwargs):
        raise Interrupt("killed during slice selection")

    monkeypatch.setattr(slice_selection, "slice_losses", interrupted)
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(str(data_dir), str(out), verbose=0)
    assert (out / "backup").is_dir(), "the backup must outlive fit"
    assert json.loads((out / "backup" / "state.json").read_text())["epoch"] == EPOCHS
    assert not (out / "results.json").exists()
    monkeypatch.setattr(slice_selection, "slice_losses", original)
    results = train(str(data_dir), str(out), verbose=1)
    printed = capsys.readouterr().out
    assert f"Resuming from the backup of epoch {EPOCHS}" in printed
    assert "Epoch 1/" not in printed  # nothing retrained
    assert [r["epoch"] for r in log_rows(out / "log.csv")] == [str(e) for e in range(EPOCHS)]
    assert len(results["selected_slices"]) == 2 and json.loads((out / "results.json").read_text()) == results
    assert not (out / "backup").exists()


def test_a_nan_loss_stops_training_with_a_clear_error(tmp_path, data_dir, tiny_model):
    from keras_sl.callbacks import NonFiniteLossError

    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"loss became (nan|inf) in epoch 1, batch \d+.*backup.*--force"):
        train(str(data_dir), str(out), verbose=0, learning_rate=1e30)
    assert not (out / "results.json").exists() and not (out / "final.weights.h5").exists()


# -- SIGKILL at every point of a real run ---------------------------------------------------------------
KILL_POINTS = {
    # point: what the backup holds when the kill lands (epochs done), or the stage after training
    "mid_epoch": 1,
    "between_epochs": 2,
    "after_last_epoch": 3,
    "during_selection": 3,
    "during_evaluation": "trained",
    "moving_preset": "trained",
    "before_results": "trained",
}


def _check_killed_state(out: Path, preset: Path, point: str) -> None:
    expected = KILL_POINTS[point]
    assert not (out / "results.json").exists()
    if isinstance(expected, int):
        assert json.loads((out / "backup" / "state.json").read_text())["epoch"] == expected
    else:
        assert json.loads((out / "backup" / "progress.json").read_text())["trained"] is True
        assert (out / "final.weights.h5").is_file()
    if point == "moving_preset":
        assert not preset.exists() and (preset.parent / f".{preset.name}.partial").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, data_dir, reference, point):
    out, preset = tmp_path / "run", tmp_path / "preset"
    run_child(data_dir, out, preset, point)
    _check_killed_state(out, preset, point)
    printed = run_child(data_dir, out, preset)
    if isinstance(KILL_POINTS[point], int):
        assert f"Resuming from the backup of epoch {KILL_POINTS[point]}" in printed
    assert_same_run(out, preset, *reference)


@pytest.mark.slow
def test_sigkill_at_every_point_of_one_run(tmp_path, data_dir, reference):
    """One run killed again and again, each rerun reaching the next point."""
    out, preset = tmp_path / "run", tmp_path / "preset"
    for point in KILL_POINTS:
        run_child(data_dir, out, preset, point)
        _check_killed_state(out, preset, point)
    run_child(data_dir, out, preset)
    assert_same_run(out, preset, *reference)
    # Once more: the run is finished, says so and trains nothing.
    again = run_child(data_dir, out, preset)
    assert "holds a finished run" in again and "Epoch" not in again
    assert_same_run(out, preset, *reference)


if __name__ == "__main__":
    child(*sys.argv[1:6])
