"""Preset folders: config, weights, selection and metadata, checked on load.

A preset is a folder (keras-hub's layout, plus SL metadata)::

    config.json          # serialized model config (keras.saving format)
    model.weights.h5     # all weights, slice selection variables included
    metadata.json        # dataset, recipe, metrics, license, input size,
                         # normalisation, selected slices, sha256 of weights

Built-in presets are folders of ``pretrained/`` shipped inside the package,
so ``SLUNet.from_preset("kvasir")`` works offline. A preset may also be a
local folder, or an ``https://`` / ``file://`` URL of a ``.zip`` or
``.tar.gz`` archive of such a folder (downloaded once into the cache).
Names are names and paths are paths (:func:`~keras_sl.presets.locate.resolve`).

Every load reads both JSON files through the checks of
:mod:`keras_sl.presets.preset_files` and verifies the weights' sha256 before
any model is built; a folder without ``metadata.json`` is refused.
``save_to_preset`` does not replace an existing preset unless
``overwrite=True``. User guide: ``docs/presets.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import keras

from keras_sl.presets.archive_cache import cache_dir, evict
from keras_sl.presets.builtin import builtin_aliases, builtin_dir, builtin_names, list_presets
from keras_sl.presets.errors import PresetError, PresetNotFoundError
from keras_sl.presets.locate import resolve
from keras_sl.presets.preset_files import (
    CONFIG_FILE,
    METADATA_FILE,
    PRESET_FILES,
    WEIGHTS_FILE,
    check_weights,
    metadata_problems,
    read_preset_files,
    sha256_file,
)

__all__ = [
    "CONFIG_FILE", "METADATA_FILE", "WEIGHTS_FILE", "PresetError", "PresetMixin", "PresetNotFoundError",
    "builtin_aliases", "builtin_dir", "builtin_names", "cache_dir", "check_save_target", "list_presets",
    "load_preset", "read_metadata", "resolve", "save_preset", "sha256_file",
]


@contextlib.contextmanager
def _evicting(folder: Path) -> Iterator[None]:
    """A check failing on a downloaded preset removes it from the cache."""
    try:
        yield
    except PresetError as err:
        if evict(folder):
            raise PresetError(f"{err} The downloaded copy was removed from the cache ({folder}); the next call "
                              "downloads it again.") from err
        raise


def read_metadata(preset: str | os.PathLike) -> dict:
    """The checked ``metadata.json`` of a preset (name, folder or URL).

    Raises :class:`PresetError` naming the file when it is missing or malformed.
    """
    folder = resolve(preset)
    with _evicting(folder):
        return read_preset_files(folder)[1]


# -- saving ---------------------------------------------------------------------------
def check_save_target(preset_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise now if :func:`save_preset` into ``preset_dir`` would fail or replace a preset.

    Call it before long work (training, conversion) whose result goes there.
    Writes nothing; returns the folder path.

    Raises:
        FileExistsError: ``preset_dir`` is a file, or holds a preset (any of
            config.json, model.weights.h5, metadata.json) and ``overwrite`` is False.
    """
    folder = Path(preset_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder: save the preset to a folder path.")
    if folder.is_dir() and not overwrite:
        found = [name for name in PRESET_FILES if (folder / name).exists()]
        if found:
            raise FileExistsError(
                f"{folder} already holds a preset ({', '.join(found)}); save_to_preset does not replace it. "
                "Pass overwrite=True to replace it, or choose another folder."
            )
    return folder


def save_preset(model: keras.Model, preset_dir: str | os.PathLike, metadata: dict | None = None,
                overwrite: bool = False) -> Path:
    """Write ``model`` as a preset folder; returns the folder path.

    The folder may be new, empty, or hold other files; one that holds a
    preset is only replaced with ``overwrite=True`` (:func:`check_save_target`).
    The three files are written next to the folder's content first and moved
    into place at the end, ``metadata.json`` (with the weights' sha256) last.
    """
    folder = check_save_target(preset_dir, overwrite)
    meta = _metadata(model, metadata)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=folder))
    try:
        config = keras.saving.serialize_keras_object(model)
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=_json_default))
        _without_optimizer(model).save_weights(staging / WEIGHTS_FILE)
        meta["weights_sha256"] = sha256_file(staging / WEIGHTS_FILE)
        (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
        for name in (WEIGHTS_FILE, CONFIG_FILE, METADATA_FILE):
            os.replace(staging / name, folder / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return folder


def _metadata(model: keras.Model, metadata: dict | None) -> dict:
    """The metadata to write: the caller's, the preprocessor's facts, and the model's."""
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}.")
    meta = json.loads(json.dumps(dict(metadata or {}), default=_json_default))  # plain JSON types
    pre = getattr(model, "preprocessor", None)
    if pre is not None:  # the same facts as the config's preprocessor, for readers of the metadata
        if pre.image_size is not None:
            meta.setdefault("input_size", [*pre.image_size, model.in_channels])
        meta.setdefault("normalization", pre.normalization)
    meta.update(
        {
            "class_name": type(model).__name__,
            "keras_sl_version": _version(),
            "keras_version": keras.__version__,
            "saved_with_backend": keras.backend.backend(),
            "parameter_count": int(model.count_params()),
            "weights_sha256": "0" * 64,  # the real digest once the weights are written
        }
    )
    if hasattr(model, "selected_slices"):
        meta["selected_slices"] = model.selected_slices
        losses = model.slice_losses
        meta["slice_losses"] = [None if math.isnan(float(v)) else float(v) for v in losses]
    meta = json.loads(json.dumps(meta, default=_json_default))
    problems = metadata_problems(meta)
    if problems:
        raise ValueError(f"Cannot save this metadata: {'; '.join(problems)}.")
    return meta


def _without_optimizer(model: keras.Model) -> keras.Model:
    """A copy without training state: Keras' ``save_weights`` also writes the
    optimizer's slots (3x the weights for AdamW), which a preset does not need."""
    if getattr(model, "optimizer", None) is None:
        return model
    clean = type(model).from_config(model.get_config())
    clean.set_weights(model.get_weights())
    return clean


# -- loading ---------------------------------------------------------------------------
def load_preset(preset: str | os.PathLike, cls=None, load_weights: bool = True, **overrides) -> keras.Model:
    """Build the model of a preset and load its weights, after checking every file.

    ``preset`` is a built-in name, a preset folder or an archive URL (see
    :func:`resolve` for the rule). ``config.json`` and ``metadata.json`` are
    checked and the weights' sha256 verified before the model is built;
    ``overrides`` replace constructor arguments of the saved config.

    Raises:
        PresetError: a file is missing or malformed, the weights do not match
            their sha256, or they do not fit the model (the message names the file).
    """
    folder = resolve(preset)
    with _evicting(folder):
        config, meta = read_preset_files(folder)
        weights = check_weights(folder, meta) if load_weights else None
    _add_legacy_preprocessor(config, meta)
    if overrides:
        config["config"].update(overrides)
    model = _build(config, folder, overrides)
    if cls is not None and not isinstance(model, cls):
        raise PresetError(
            f"Preset {str(preset)!r} holds a {config.get('class_name')}, not a {cls.__name__}; "
            f"load it with keras_sl.{config.get('class_name')}.from_preset()."
        )
    if weights is not None:
        try:
            with warnings.catch_warnings():
                # Presets carry no optimizer state by design (_without_optimizer);
                # the model's fresh optimizer keeps its initial slots.
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                model.load_weights(weights)
        except Exception as err:  # re-raised with a fix
            raise PresetError(
                f"Could not load {weights} into the model built from {folder / CONFIG_FILE}: {err}. "
                "The weights belong to a different architecture; save the preset again."
            ) from err
    model.preset_metadata = meta
    return model


def _build(config: dict, folder: Path, overrides: dict) -> keras.Model:
    try:
        return keras.saving.deserialize_keras_object(config)
    except Exception as err:  # unknown class, bad arguments: re-raised naming the file
        extra = f" with the arguments you passed ({', '.join(sorted(overrides))})" if overrides else ""
        raise PresetError(
            f"Could not build the model described by {folder / CONFIG_FILE}{extra}: {type(err).__name__}: {err}. "
            "Check the file (it must come from save_to_preset with this keras_sl version or an older one)"
            + (" and the arguments." if overrides else ".")
        ) from err


def _add_legacy_preprocessor(config: dict, meta: dict) -> None:
    """Presets saved before tasks carried a preprocessor kept the input size
    and normalisation in their metadata only: build the preprocessor from it."""
    inner = config.get("config", {})
    if "preprocessor" in inner or config.get("class_name") not in _TASK_CLASSES:
        return
    if not (meta.get("normalization") or meta.get("input_size")):
        return
    from keras_sl.preprocessing import ImagePreprocessor

    size = meta.get("input_size")
    pre = ImagePreprocessor.from_normalization(
        meta.get("normalization"), image_size=size[:2] if size else None,
        data_format=inner.get("data_format") or None,
    )
    inner["preprocessor"] = keras.saving.serialize_keras_object(pre)


#: Classes whose config takes a ``preprocessor`` (tasks).
_TASK_CLASSES = ("SLUNet", "SLSegmenter", "Segmenter")


def _version() -> str:
    from keras_sl.version import __version__

    return __version__


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


class PresetMixin:
    """``from_preset`` / ``save_to_preset`` / ``presets`` for keras_sl models."""

    @classmethod
    def from_preset(cls, preset: str | os.PathLike, load_weights: bool = True, **kwargs):
        """Build a model from a built-in preset name, a folder or an archive URL.

        Names are names and paths are paths: ``"kvasir"`` is the built-in
        preset even if a folder ``kvasir`` exists here (pass ``"./kvasir"``
        or ``Path("kvasir")`` for that one); any string with a path separator,
        a leading ``.`` or ``~``, or that is not a built-in name is a path.
        Every file is checked (``metadata.json`` is required) and the weights'
        sha256 verified before the model is built.

        Example::

            model = keras_sl.SLUNet.from_preset("kvasir")
            model.preset_metadata["metrics"]
        """
        return load_preset(preset, cls=cls, load_weights=load_weights, **kwargs)

    def save_to_preset(self, preset_dir: str | os.PathLike, metadata: dict | None = None,
                       overwrite: bool = False) -> Path:
        """Save config, weights, selection and ``metadata`` into ``preset_dir``.

        A folder that already holds a preset is replaced only with
        ``overwrite=True`` (else :class:`FileExistsError`).
        """
        return save_preset(self, preset_dir, metadata, overwrite=overwrite)

    @classmethod
    def list_presets(cls) -> dict[str, dict]:
        """Built-in presets for this class: ``{name: metadata}``."""
        return {k: v for k, v in list_presets().items() if v.get("class_name") == cls.__name__}
