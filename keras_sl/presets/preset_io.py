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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path

import keras

from keras_sl import config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"


def builtin_dir() -> Path:
    """Folder holding the built-in presets (installed or source tree)."""
    try:
        from importlib.resources import files

        path = Path(str(files("keras_sl.pretrained")))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "pretrained"


def cache_dir() -> Path:
    return config.cache_dir() / "presets"


def sha256_file(path: os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


ALIASES_FILE = "aliases.json"


def builtin_aliases() -> dict[str, str]:
    """Short names of built-in presets, e.g. ``{"kvasir": "kvasir_sl_unet_8l2r"}``."""
    path = builtin_dir() / ALIASES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def list_presets(include_aliases: bool = True) -> dict[str, dict]:
    """Built-in presets: ``{name: metadata}``, sorted by name; aliases point
    at the same metadata (with an ``alias_of`` entry)."""
    root = builtin_dir()
    out = {}
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            meta = folder / METADATA_FILE
            if folder.is_dir() and meta.is_file():
                out[folder.name] = json.loads(meta.read_text())
    if include_aliases:
        for alias, target in builtin_aliases().items():
            if target in out:
                out[alias] = {**out[target], "alias_of": target}
    return dict(sorted(out.items()))


def _download(url: str, sha256: str | None = None) -> Path:
    """Fetch and unpack an archived preset once; verify its sha256 if given."""
    target = cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16]
    if (target / CONFIG_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "preset_archive"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as f:
                shutil.copyfileobj(response, f)
        except OSError as err:
            raise OSError(
                f"Could not download preset from {url}: {err}. Check the address "
                "and your network, or download the archive by hand and pass the "
                "unpacked folder to from_preset()."
            ) from err
        if sha256 is not None and sha256_file(archive) != sha256:
            raise ValueError(f"Checksum mismatch for {url}: the download is corrupted or was changed.")
        unpack = Path(tmp) / "unpacked"
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(unpack)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(unpack, filter="data")
        else:
            raise ValueError(f"{url} is neither a .zip nor a .tar.gz preset archive.")
        found = [p.parent for p in unpack.rglob(CONFIG_FILE)]
        if len(found) != 1:
            raise ValueError(f"The archive at {url} must contain exactly one preset folder, found {len(found)}.")
        shutil.move(str(found[0]), str(target))
    return target


def resolve(preset: str | os.PathLike) -> Path:
    """Turn a preset name, folder or URL into a local folder."""
    text = str(preset)
    if text.startswith(("https://", "http://", "file://")):
        return _download(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    builtin = builtin_dir() / builtin_aliases().get(text, text)
    if "/" not in text and builtin.is_dir():
        return builtin
    names = ", ".join(sorted(list_presets())) or "(none installed)"
    raise ValueError(
        f"Unknown preset {text!r}. Built-in presets: {names}. "
        "Pass one of these names, a local preset folder, or an https:// URL of a preset archive."
    )


def read_metadata(preset) -> dict:
    folder = resolve(preset)
    meta = folder / METADATA_FILE
    return json.loads(meta.read_text()) if meta.is_file() else {}


def save_preset(model: keras.Model, preset_dir: os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``model`` as a preset folder; returns the folder path."""
    folder = Path(preset_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = keras.saving.serialize_keras_object(model)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=_json_default))
    weights = folder / WEIGHTS_FILE
    _without_optimizer(model).save_weights(weights)
    meta = dict(metadata or {})
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
            "weights_sha256": sha256_file(weights),
        }
    )
    if hasattr(model, "selected_slices"):
        meta["selected_slices"] = model.selected_slices
        losses = model.slice_losses
        meta["slice_losses"] = [None if v != v else float(v) for v in losses]
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
    return folder


def _without_optimizer(model: keras.Model) -> keras.Model:
    """A copy without training state: Keras' ``save_weights`` also writes the
    optimizer's slots (3x the weights for AdamW), which a preset does not need."""
    if getattr(model, "optimizer", None) is None:
        return model
    clean = type(model).from_config(model.get_config())
    clean.set_weights(model.get_weights())
    return clean


def load_preset(preset, cls=None, load_weights: bool = True, **overrides) -> keras.Model:
    """Build the model of a preset and load (and verify) its weights."""
    folder = resolve(preset)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"{folder} is not a preset folder: it has no {CONFIG_FILE}.")
    config = json.loads(config_path.read_text())
    meta = read_metadata(folder)
    _add_legacy_preprocessor(config, meta)
    if overrides:
        config["config"].update(overrides)
    model = keras.saving.deserialize_keras_object(config)
    if cls is not None and not isinstance(model, cls):
        raise ValueError(
            f"Preset {str(preset)!r} holds a {config.get('class_name')}, not a {cls.__name__}; "
            f"load it with keras_sl.{config.get('class_name')}.from_preset()."
        )
    if load_weights:
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise ValueError(f"Preset {folder} has no {WEIGHTS_FILE}; pass load_weights=False to build it untrained.")
        expected = meta.get("weights_sha256")
        if expected and sha256_file(weights) != expected:
            raise ValueError(
                f"The weights file {weights} does not match the sha256 in {METADATA_FILE}: "
                "it is corrupted or was replaced. Re-install keras_sl or re-download the preset."
            )
        try:
            with warnings.catch_warnings():
                # Presets carry no optimizer state by design (_without_optimizer);
                # the model's fresh optimizer keeps its initial slots.
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                model.load_weights(weights)
        except Exception as err:  # noqa: BLE001 - re-raised with a fix
            raise ValueError(
                f"Could not load {weights} into the model built from {CONFIG_FILE}: {err}. "
                "The weights belong to a different architecture; save the preset again."
            ) from err
    model.preset_metadata = meta
    return model


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
    def from_preset(cls, preset: str, load_weights: bool = True, **kwargs):
        """Build a model from a built-in preset name, a folder or a URL.

        Example::

            model = keras_sl.SLUNet.from_preset("kvasir")
            model.preset_metadata["metrics"]
        """
        return load_preset(preset, cls=cls, load_weights=load_weights, **kwargs)

    def save_to_preset(self, preset_dir, metadata: dict | None = None):
        """Save config, weights, selection and ``metadata`` into ``preset_dir``."""
        return save_preset(self, preset_dir, metadata)

    @classmethod
    def list_presets(cls) -> dict[str, dict]:
        """Built-in presets for this class: ``{name: metadata}``."""
        return {k: v for k, v in list_presets().items() if v.get("class_name") == cls.__name__}
