"""Files the ``keras-sl`` commands write: output paths checked before the
work, unique mask names for a batch of images, JSON written whole.

Standard library only: the CLI checks its output paths before it imports a
backend, so a bad ``--json`` or ``--out`` fails at once.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

from keras_sl.cli_errors import EXIT_FAILED, EXIT_USAGE, CLIError, file_message, report_file_error
from keras_sl.utils.json_values import json_safe  # noqa: F401 (re-exported: the CLI's JSON writer)


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _check_can_create_under(path: Path, option: str) -> None:
    """``path`` does not exist yet: its nearest existing ancestor must be a
    writable folder (the folders in between are created when written)."""
    base = _nearest_existing(path.parent if path.parent != path else path)
    if not base.is_dir():
        raise CLIError(f"{option} {path}: {base} is a file, not a folder", "choose a path you can write to",
                       EXIT_USAGE)
    if not os.access(base, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {path}: no permission to write in {base}", "choose a path you can write to",
                       EXIT_USAGE)


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """Fail now (``CLIError``, exit 2) if the file ``path`` could not be written later."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CLIError(f"{option} {path}: is a folder, expected a file name", f"e.g. {option} {path / 'out.json'}",
                       EXIT_USAGE)
    if path.exists():
        if not os.access(path, os.W_OK):
            raise CLIError(f"{option} {path}: no permission to overwrite it", "choose a path you can write to",
                           EXIT_USAGE)
        return path
    _check_can_create_under(path.absolute(), option)
    return path


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Fail now (``CLIError``, exit 2) if the folder ``path`` could not be created or written."""
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CLIError(f"{option} {path}: is a file, expected a folder", "choose a folder name", EXIT_USAGE)
        if not os.access(path, os.W_OK | os.X_OK):
            raise CLIError(f"{option} {path}: no permission to write in it", "choose a path you can write to",
                           EXIT_USAGE)
        return path
    _check_can_create_under(path.absolute(), option)
    return path


def check_output_path(path: str | os.PathLike, option: str) -> Path:
    """Fail now (``CLIError``, exit 2) if ``path`` (a file or a folder the
    command makes, e.g. an export) could not be created: its parent must be writable."""
    path = Path(path).expanduser()
    if not path.exists():
        _check_can_create_under(path.absolute(), option)
    elif not os.access(path, os.W_OK):
        raise CLIError(f"{option} {path}: no permission to overwrite it", "choose a path you can write to",
                       EXIT_USAGE)
    return path


def write_json(path: str | os.PathLike, value) -> Path:
    """Write ``value`` as strict JSON (non-finite numbers as ``null``) through
    a temporary file and a rename: the file is always whole, never half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def unique_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A distinct output name stem per input path, as short as possible.

    The file stem (``cell`` for ``a/cell.png``) when it is unique; images
    whose stems collide (compared case-insensitively, as on macOS and Windows)
    get their parent folders prepended, joined by ``__``, until they differ
    (``a__cell``, ``b__cell``); if the folders do not tell them apart (``cell.png``
    and ``cell.jpg`` in one folder) the extension is added (``cell_png``), and
    as a last resort a counter (``cell_2``). The same path given twice gets
    the counter too.

    Example:
    >>> unique_stems(["a/cell.png", "b/cell.png", "x/y/nuc.tif"])
    ['a__cell', 'b__cell', 'nuc']
    >>> unique_stems(["d/cell.png", "d/cell.jpg", "d/Cell.png"])
    ['cell_png', 'cell_jpg', 'Cell_png_2']
    """
    full = [Path(os.path.abspath(os.fspath(p))) for p in paths]
    names = [p.stem for p in full]

    def clashes() -> set[int]:
        seen: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            seen.setdefault(name.casefold(), []).append(i)
        return {i for group in seen.values() if len(group) > 1 for i in group}

    depth = 0
    while (clash := clashes()) and depth < max(len(p.parts) for p in full):
        depth += 1
        for i in clash:
            folders = [part for part in full[i].parent.parts[-depth:] if part != full[i].anchor]
            names[i] = "__".join([*folders, full[i].stem])
    if clashes():  # the folders cannot tell them apart: back to the stem, with the extension
        for i in clashes():
            names[i] = full[i].stem + (("_" + full[i].suffix.lstrip(".")) if full[i].suffix else "")
    used: set[str] = set()
    for i, name in enumerate(names):
        candidate, n = name, 1
        while candidate.casefold() in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate.casefold())
        names[i] = candidate
    return names


class FileBatch:
    """The input files of a per-image command (``predict``, ``explain``) and its JSON report.

    A file that fails is reported in one line and recorded in
    ``state["failed"]``; the batch goes on. :meth:`save` rewrites the report
    whole (call it after every image); :meth:`finish` marks it finished and
    returns the exit code (1 if any file failed).
    """

    def __init__(self, command: str, images: Sequence[str], report_path: Path, state: dict, debug: bool = False):
        self.command, self.images, self.report_path, self.state, self.debug = (
            command, list(images), Path(report_path), state, debug)
        state.setdefault("finished", False)
        state.setdefault("failed", [])

    def fail(self, path, err) -> None:
        """Report one failed file (``--debug``: with its traceback) and record it."""
        if self.debug and sys.exc_info()[0] is not None:
            traceback.print_exc()
        report_file_error(self.command, path, err)
        self.state["failed"].append({"image": str(path), "error": file_message(path, err)})

    def existing(self) -> list[tuple[str, str]]:
        """``(path, output stem)`` of the files that exist (``a/cell.png`` and
        ``b/cell.png`` get distinct stems); missing ones are reported now,
        before any model loads. None existing: the report is written and a
        CLIError raised."""
        todo = []
        for path, stem in zip(self.images, unique_stems(self.images)):
            if Path(path).is_file():
                todo.append((path, stem))
            else:
                self.fail(path, FileNotFoundError(2, "no such file" if not Path(path).exists() else "not a file",
                                                  str(path)))
        if not todo:
            self.report_path.parent.mkdir(parents=True, exist_ok=True)
            self.state["finished"] = True
            self.save()
            raise CLIError(f"none of the {len(self.images)} image(s) exists", "check the image paths")
        return todo

    def save(self) -> None:
        write_json(self.report_path, self.state)

    def finish(self) -> int:
        self.state["finished"] = True
        self.save()
        if self.state["failed"]:
            print(f"keras-sl {self.command}: {len(self.state['failed'])} of {len(self.images)} image(s) failed; "
                  f"results and errors in {self.report_path}", file=sys.stderr)
            return EXIT_FAILED
        return 0
