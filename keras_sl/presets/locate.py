"""Where a preset argument points: names are names, paths are paths, URLs are URLs.

The rule (:func:`resolve`), in order:

1. ``https://``, ``http://`` or ``file://`` ... — the URL of a preset archive
   (downloaded once into the cache, :mod:`keras_sl.presets.archive_cache`).
2. A string that is a registered built-in name (``keras-sl presets`` lists
   them, ``"kvasir"``) and does not look like a path — the built-in preset,
   even when a local folder of that name exists (a warning then says to pass
   ``./kvasir`` for the folder).
3. Everything else is a path: a ``pathlib.Path``, or a string with a path
   separator or starting with ``.`` or ``~`` (``"./kvasir"``, ``"runs/p"``,
   ``"~/p"``), or an unregistered name (``"my_preset"``, a folder in the
   current directory). It must be a preset folder.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from pathlib import Path

from keras_sl.presets.archive_cache import URL_SCHEMES, download_preset
from keras_sl.presets.builtin import builtin_names
from keras_sl.presets.errors import PresetError, PresetNotFoundError
from keras_sl.presets.preset_files import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_WHAT_A_PRESET_IS = (
    "A preset is a folder (config.json, model.weights.h5, metadata.json) written by model.save_to_preset(folder), "
    "a built-in name (keras-sl presets lists them), or the https:// / file:// URL of a .zip / .tar.gz archive of "
    "such a folder."
)


def looks_like_path(text: str) -> bool:
    """True for strings that are paths by their spelling: a path separator in
    them, or a leading ``.`` or ``~``."""
    separators = {"/", os.sep, os.altsep} - {None}
    return any(sep in text for sep in separators) or text.startswith((".", "~"))


def resolve(preset: str | os.PathLike) -> Path:
    """Turn a preset name, folder or archive URL into a local folder.

    Names are names and paths are paths: a registered built-in name (that
    does not look like a path) is the built-in preset even if a folder of
    that name exists in the current directory; a ``pathlib.Path``, a string
    with a path separator or a leading ``.`` / ``~``, and any other string
    are paths. URLs (``https://``, ``http://``, ``file://``, optionally with
    ``#sha256=<hex>``) are downloaded once into the cache.

    Raises:
        PresetNotFoundError: no built-in of that name and no folder at that
            path (the closest built-in names are suggested).
        PresetError: the path is a file, not a preset folder.
    """
    if isinstance(preset, os.PathLike):
        text = os.fspath(preset)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        return _local(Path(text).expanduser(), text, bare_name=False)
    if not isinstance(preset, str):
        raise TypeError(f"A preset is given as a str or pathlib.Path, got {type(preset).__name__}. {_WHAT_A_PRESET_IS}")
    if not preset:
        raise PresetNotFoundError(f"The preset is an empty string. {_WHAT_A_PRESET_IS}")
    scheme = _SCHEME.match(preset)
    if scheme:
        if scheme.group(1).lower() not in URL_SCHEMES:
            raise PresetError(f"Cannot load a preset from {preset}: only https://, http:// and file:// URLs are "
                              "supported. Download the archive, unpack it and pass the folder.")
        return download_preset(preset)
    if not looks_like_path(preset):
        names = builtin_names()
        if preset in names:
            if Path(preset).exists():
                warnings.warn(
                    f"{preset!r} is the built-in preset {names[preset].name}; the local "
                    f"{'folder' if Path(preset).is_dir() else 'file'} {preset!r} in {Path.cwd()} is not used. "
                    f"Pass './{preset}' to load that one.", UserWarning, stacklevel=3,
                )
            return names[preset]
    return _local(Path(preset).expanduser(), preset, bare_name=not looks_like_path(preset))


def _local(path: Path, text: str, bare_name: bool) -> Path:
    if path.is_dir():
        return path
    if path.is_file():
        raise PresetError(_file_message(path))
    names = builtin_names()
    close = difflib.get_close_matches(Path(text).name, list(names), n=3, cutoff=0.6)
    ordered = close + [n for n in names if n not in close]
    listing = ", ".join(ordered) or "(none installed)"
    guess = f" Did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
    if bare_name:
        raise PresetNotFoundError(
            f"Unknown preset {text!r}: not a built-in name, and there is no folder {text!r} in {Path.cwd()}."
            f"{guess} Built-in presets: {listing}. {_WHAT_A_PRESET_IS}"
        )
    builtin_hint = ""
    if Path(text).name in names:
        builtin_hint = f" (To load the built-in preset, pass the name alone: {Path(text).name!r}.)"
    raise PresetNotFoundError(
        f"No preset folder at {path}: it does not exist.{builtin_hint} {_WHAT_A_PRESET_IS}"
        + ("" if builtin_hint else f" Built-in presets: {listing}.")
    )


def _file_message(path: Path) -> str:
    """What to do with a file passed where a preset folder belongs."""
    name = path.name.lower()
    if name.endswith(".weights.h5"):
        how = (" To use a weights file, build the model with the arguments it was trained with and call "
               f"model.load_weights({str(path)!r}); then model.save_to_preset(folder) makes a preset of it.")
    elif name.endswith(".keras"):
        how = f" Load a .keras file with keras.saving.load_model({str(path)!r})."
    elif name.endswith((".zip", ".tar.gz", ".tgz", ".tar")):
        how = f" To load a local preset archive, pass its URL: {path.resolve().as_uri()!r}."
    elif path.name in (CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE):
        how = f" Pass the folder that holds it: {str(path.parent)!r}."
    else:
        how = ""
    return f"{path} is a file, not a preset folder. {_WHAT_A_PRESET_IS}{how}"
