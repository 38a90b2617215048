"""Built-in presets: the folders of ``pretrained/`` shipped inside the package, and their aliases."""

from __future__ import annotations

import json
from pathlib import Path

from keras_sl.presets.preset_files import METADATA_FILE, read_metadata_file

ALIASES_FILE = "aliases.json"


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


def builtin_aliases() -> dict[str, str]:
    """Short names of built-in presets, e.g. ``{"kvasir": "kvasir_sl_unet_8l2r"}``."""
    path = builtin_dir() / ALIASES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def builtin_names() -> dict[str, Path]:
    """``{name: folder}`` of every built-in preset and alias, sorted by name
    (no file is parsed: cheap enough for error messages)."""
    root = builtin_dir()
    folders = {}
    if root.is_dir():
        folders = {p.name: p for p in root.iterdir() if p.is_dir() and (p / METADATA_FILE).is_file()}
    aliases = {a: folders[t] for a, t in builtin_aliases().items() if t in folders}
    return dict(sorted({**folders, **aliases}.items()))


def list_presets(include_aliases: bool = True) -> dict[str, dict]:
    """Built-in presets: ``{name: metadata}``, sorted by name; aliases point
    at the same metadata (with an ``alias_of`` entry)."""
    root = builtin_dir()
    out = {}
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and (folder / METADATA_FILE).is_file():
                out[folder.name] = read_metadata_file(folder)
    if include_aliases:
        for alias, target in builtin_aliases().items():
            if target in out:
                out[alias] = {**out[target], "alias_of": target}
    return dict(sorted(out.items()))
