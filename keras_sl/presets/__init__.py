"""Preset folders (config + weights + metadata), built-in and local."""

from keras_sl.presets.preset_io import (
    PresetMixin,
    builtin_dir,
    list_presets,
    load_preset,
    read_metadata,
    resolve,
    save_preset,
    sha256_file,
)

__all__ = [
    "PresetMixin",
    "builtin_dir",
    "list_presets",
    "load_preset",
    "read_metadata",
    "resolve",
    "save_preset",
    "sha256_file",
]
