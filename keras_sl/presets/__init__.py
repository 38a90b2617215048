"""Preset folders (config + weights + metadata), built-in, local and downloaded.

Names are names and paths are paths (:func:`resolve`); every load checks the
files and the weights' sha256 (:mod:`keras_sl.presets.preset_files`); archive
URLs are cached only once they pass (:mod:`keras_sl.presets.archive_cache`);
``save_to_preset`` replaces a preset only with ``overwrite=True``. User guide:
``docs/presets.md``.
"""

from keras_sl.presets.errors import PresetError, PresetNotFoundError
from keras_sl.presets.preset_io import (
    PresetMixin,
    builtin_dir,
    cache_dir,
    check_save_target,
    list_presets,
    load_preset,
    read_metadata,
    resolve,
    save_preset,
    sha256_file,
)

__all__ = [
    "PresetError",
    "PresetMixin",
    "PresetNotFoundError",
    "builtin_dir",
    "cache_dir",
    "check_save_target",
    "list_presets",
    "load_preset",
    "read_metadata",
    "resolve",
    "save_preset",
    "sha256_file",
]
