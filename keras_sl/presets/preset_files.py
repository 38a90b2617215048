"""The three files of a preset folder, read and checked before any model is built.

``config.json`` must be a JSON object with a ``class_name`` string and a
``config`` object; ``metadata.json`` a JSON object with the ``weights_sha256``
of ``model.weights.h5`` and, where present, well-typed keys that loading and
prediction read (``input_size``, ``normalization``, ``selected_slices``, ...).
Every problem raises :class:`~keras_sl.presets.errors.PresetError` naming
the file and saying how to fix it.
"""

from __future__ import annotations

import json
import math
import os
import re
from numbers import Real
from pathlib import Path

from keras_sl.presets.errors import PresetError
from keras_sl.utils.files import sha256_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)

#: How a user makes a valid preset (appended to messages about missing files).
HOW_TO_MAKE = ("A preset folder is written by model.save_to_preset(folder) (or "
               "keras_sl.presets.save_preset(model, folder)): load or rebuild the model and save it again.")
_HOW_TO_REPAIR = "Restore the file from the original preset (download or copy it again), or save the model again " \
                 "with model.save_to_preset(folder, overwrite=True)."
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _read_json(folder: Path, name: str):
    path = folder / name
    if not path.is_file():
        what = "a directory, not a file" if path.exists() else "missing"
        raise PresetError(
            f"{folder} is not a valid preset: {name} is {what} ({path}). Without it keras_sl cannot check the "
            f"weights or {'rebuild the model' if name == CONFIG_FILE else 'know the input size and normalisation'}. "
            f"{HOW_TO_MAKE}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PresetError(f"Could not read {path}: {err}. {_HOW_TO_REPAIR}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PresetError(
            f"{path} is not valid JSON ({err.msg}, line {err.lineno} column {err.colno}). {_HOW_TO_REPAIR}"
        ) from err


def _malformed(path: Path, problem: str) -> PresetError:
    return PresetError(f"{path} is malformed: {problem}. {_HOW_TO_REPAIR}")


def read_config(folder: os.PathLike) -> dict:
    """``config.json`` of a preset folder, checked for the keys a model is built from."""
    folder = Path(folder)
    config = _read_json(folder, CONFIG_FILE)
    path = folder / CONFIG_FILE
    if not isinstance(config, dict):
        raise _malformed(path, f"it holds a JSON {_json_type(config)}, not an object (a serialized Keras model)")
    name = config.get("class_name")
    if not isinstance(name, str) or not name:
        raise _malformed(path, "'class_name' (the model class, e.g. \"SLUNet\") is missing or not a string")
    if not isinstance(config.get("config"), dict):
        raise _malformed(path, "'config' (the model's constructor arguments) is missing or not an object")
    for key in ("module", "registered_name"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise _malformed(path, f"{key!r} must be a string, got a {_json_type(config[key])}")
    return config


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Real):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_normalization(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"'normalization' must be an object {{\"scale\", \"mean\", \"std\"}} or null, got a {_json_type(value)}"
    if "scale" in value and not _is_number(value["scale"]):
        return "'normalization.scale' must be a number"
    for key in ("mean", "std"):
        v = value.get(key)
        if v is None or _is_number(v):
            continue
        if not (isinstance(v, list) and v and all(_is_number(x) for x in v)):
            return f"'normalization.{key}' must be a number, a list of numbers or null"
    return None


#: Checks of the metadata keys that loading, prediction and the CLI read: ``key: problem or None``.
_METADATA_CHECKS = {
    "class_name": lambda v: None if isinstance(v, str) and v else "'class_name' must be a non-empty string",
    "input_size": lambda v: None if v is None or (
        isinstance(v, list) and len(v) in (2, 3) and all(x is None or (_is_int(x) and x > 0) for x in v)
    ) else f"'input_size' must be [height, width(, channels)] of positive integers or null, got {v!r}",
    "normalization": _check_normalization,
    "selected_slices": lambda v: None if v is None or (
        isinstance(v, list) and all(_is_int(x) and x >= 0 for x in v)
    ) else f"'selected_slices' must be a list of slice indices (integers >= 0), got {v!r}",
    "slice_losses": lambda v: None if v is None or (
        isinstance(v, list) and all(x is None or _is_number(x) for x in v)
    ) else "'slice_losses' must be a list of numbers (null for NaN)",
    "q_threshold": lambda v: None if _is_number(v) and math.isfinite(v)
    else f"'q_threshold' (the PQA flagging threshold) must be a finite number, got {v!r}",
    "pqa_threshold": lambda v: None if _is_number(v) and math.isfinite(v)
    else f"'pqa_threshold' (the PQA flagging threshold) must be a finite number, got {v!r}",
}


def metadata_problems(meta) -> list[str]:
    """What is wrong with a metadata dict (empty when nothing is)."""
    if not isinstance(meta, dict):
        return [f"it holds a JSON {_json_type(meta)}, not an object"]
    problems = []
    sha = meta.get("weights_sha256")
    if sha is None:
        problems.append("'weights_sha256' (the sha256 of model.weights.h5, checked on every load) is missing")
    elif not (isinstance(sha, str) and _SHA256.match(sha)):
        problems.append(f"'weights_sha256' must be 64 hexadecimal digits, got {sha!r}")
    for key, check in _METADATA_CHECKS.items():
        if key in meta:
            problem = check(meta[key])
            if problem:
                problems.append(problem)
    return problems


def read_metadata_file(folder: os.PathLike, config: dict | None = None) -> dict:
    """``metadata.json`` of a preset folder, checked (and against ``config``'s class if given)."""
    folder = Path(folder)
    meta = _read_json(folder, METADATA_FILE)
    path = folder / METADATA_FILE
    problems = metadata_problems(meta)
    if problems:
        raise _malformed(path, "; ".join(problems))
    if config is not None and meta.get("class_name", config["class_name"]) != config["class_name"]:
        raise PresetError(
            f"{path} describes a {meta['class_name']} but {folder / CONFIG_FILE} a {config['class_name']}: the "
            f"files come from different presets. {_HOW_TO_REPAIR}"
        )
    meta["weights_sha256"] = meta["weights_sha256"].lower()
    return meta


def read_preset_files(folder: os.PathLike) -> tuple[dict, dict]:
    """``(config, metadata)`` of a preset folder, both checked."""
    config = read_config(folder)
    return config, read_metadata_file(folder, config)


def check_weights(folder: os.PathLike, meta: dict) -> Path:
    """The weights file of a preset folder after checking it against ``weights_sha256``."""
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise PresetError(
            f"{folder} has no {WEIGHTS_FILE}: copy or download the whole preset folder again, or pass "
            "load_weights=False to build the model untrained."
        )
    got = sha256_file(weights)
    if got != meta["weights_sha256"]:
        raise PresetError(
            f"The weights file {weights} does not match the sha256 in {folder / METADATA_FILE} (expected "
            f"{meta['weights_sha256']}, got {got}): it is corrupted or was replaced. Re-install keras_sl or "
            "download or copy the preset again."
        )
    return weights


def verify_folder(folder: os.PathLike) -> tuple[dict, dict]:
    """Every check a load makes (config, metadata, weights sha256); returns ``(config, metadata)``."""
    config, meta = read_preset_files(folder)
    check_weights(folder, meta)
    return config, meta
