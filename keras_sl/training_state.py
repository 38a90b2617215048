"""The files of a training run folder, written so that a kill loses nothing.

A run folder (``keras-sl train --out``, :func:`keras_sl.training.train_segmentation`)
holds, in the order they are written:

- ``log.csv``: one row per epoch (rows of re-run epochs are replaced, never repeated);
- ``backup/``: the training state of the last finished epoch
  (:class:`keras_sl.callbacks.TrainingBackup`) and ``backup/progress.json``,
  what is done after training (final weights, selection, preset);
- ``final.weights.h5``: the trained weights with the slice selection;
- ``per_image.json``: the test evaluation per image;
- ``results.json``: written last: its presence means the run is finished.
  ``backup/`` is removed after it.

Every file is written to a temporary name and renamed into place, so each one
is either complete or absent.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

RESULTS = "results.json"
PER_IMAGE = "per_image.json"
FINAL_WEIGHTS = "final.weights.h5"
LOG = "log.csv"
BACKUP = "backup"
PROGRESS = "progress.json"

#: results.json keys that must match the requested run for it to count as this run's results
IDENTITY_KEYS = ("dataset", "model_name", "resolution", "epochs", "batch_size", "seed", "init_preset",
                 "patches_per_image")
#: Identity keys whose None is a setting of its own (a run without patches is another run), not "not given".
NONE_IS_A_VALUE = ("patches_per_image",)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save_weights(model, path: str | os.PathLike) -> None:
    """``model.save_weights(path)`` through a temporary file and a rename
    (Keras wants the ``.weights.h5`` suffix, so the temporary name keeps it)."""
    path = Path(path)
    stem = path.name[: -len(".weights.h5")] if path.name.endswith(".weights.h5") else path.stem
    tmp = path.with_name(f"{stem}.partial-{os.getpid()}.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; None if the file is absent. A file that is
    not a JSON object raises a ValueError naming it."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it, or start the run over "
                         "(overwrite=True; keras-sl train --force).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object; delete it, or start the run over "
                         "(overwrite=True; keras-sl train --force).")
    return data


def finished_results(out: Path, expected: dict) -> dict | None:
    """The stored results if ``out`` holds a finished run (``results.json`` with
    a test evaluation), else None. Results of a run with other settings
    (``expected``, keys of :data:`IDENTITY_KEYS`) raise a ValueError."""
    results = read_json(out / RESULTS)
    if results is None or not isinstance(results.get("test"), dict):
        return None
    diff = [f"{k}: {results.get(k)!r} there, {expected[k]!r} now" for k in IDENTITY_KEYS
            if k in expected and (expected[k] is not None or k in NONE_IS_A_VALUE) and results.get(k) != expected[k]]
    if diff:
        raise ValueError(
            f"{out} holds the finished results of another run ({'; '.join(diff)}). Use another output folder, "
            "or pass overwrite=True (keras-sl train --force) to replace that run."
        )
    return results


def clear_run(out: Path) -> None:
    """Remove what a run wrote into ``out`` (for ``overwrite=True``); other files stay."""
    for name in (RESULTS, PER_IMAGE, FINAL_WEIGHTS, LOG):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / BACKUP, ignore_errors=True)


class Progress:
    """What is done after training (``backup/progress.json``): a dict saved
    atomically on every :meth:`update`."""

    def __init__(self, out: Path):
        self.path = out / BACKUP / PROGRESS
        self.data = read_json(self.path) or {}

    def check_config(self, config: dict) -> None:
        """Refuse to continue the post-training steps of a run with other settings."""
        saved = self.data.get("config")
        config = json.loads(json.dumps(config))
        if saved is None or saved == config:
            return
        diff = ", ".join(f"{k}: {saved.get(k)!r} there, {config.get(k)!r} now"
                         for k in sorted(set(saved) | set(config)) if saved.get(k) != config.get(k))
        raise ValueError(
            f"{self.path.parent.parent} holds a trained, unfinished run with other settings ({diff}). Rerun with the "
            "same settings to finish it, use another output folder, or start over (overwrite=True; "
            "keras-sl train --force)."
        )

    def get(self, key, default=None):
        return self.data.get(key, default)

    def update(self, **values) -> None:
        self.data.update(values)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=1))


def is_preset_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "metadata.json").is_file()


def check_preset_target(preset_dir: Path, ours: bool, overwrite: bool) -> None:
    """Refuse, before training, to write a preset over another one."""
    if ours or not preset_dir.exists():
        return
    if not preset_dir.is_dir():
        raise FileExistsError(f"The preset path {preset_dir} is a file; choose a folder for the preset.")
    if not any(preset_dir.iterdir()):
        return
    if not is_preset_folder(preset_dir):
        raise FileExistsError(f"The preset folder {preset_dir} holds other files; choose an empty or new folder.")
    if not overwrite:
        raise FileExistsError(
            f"The preset folder {preset_dir} already holds a preset; choose another folder, or pass "
            "overwrite=True (keras-sl train --force) to replace it."
        )


def publish_preset(save, preset_dir: Path, progress: Progress, overwrite: bool = False) -> None:
    """Write a preset with ``save(folder)`` into a staging folder next to
    ``preset_dir``, then move it into place; ``progress`` records the move so
    that a rerun after a kill knows the folder is this run's."""
    preset_dir = Path(preset_dir)
    if progress.get("preset") in ("moving", "done") and is_preset_folder(preset_dir):
        progress.update(preset="done")
        return
    staging = preset_dir.with_name(f".{preset_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    preset_dir.parent.mkdir(parents=True, exist_ok=True)
    save(staging)
    progress.update(preset="moving")
    if preset_dir.exists():  # checked before training: empty, or overwrite=True
        if preset_dir.is_dir() and not any(preset_dir.iterdir()):
            preset_dir.rmdir()
        elif overwrite and preset_dir.is_dir() and is_preset_folder(preset_dir):
            shutil.rmtree(preset_dir)
        else:
            progress.update(preset=None)
            raise FileExistsError(f"{preset_dir} appeared during training; the preset is in {staging}. Move it "
                                  "where you want it, or rerun with overwrite=True (keras-sl train --force).")
    os.replace(staging, preset_dir)
    progress.update(preset="done")
