"""How ``keras-sl`` reports errors: one line and a hint, not a traceback.

Exit codes:

* ``0`` success;
* ``1`` the work failed: an unknown or broken preset, a missing data folder,
  an unreadable image (for a batch of images: any image failed, the others
  were still done);
* ``2`` the command line is wrong, found before any work: argparse's own
  errors, option values (``--limit 0``), output paths that cannot be written;
* ``130`` interrupted (Ctrl-C).

A user error is printed as ``keras-sl <command>: error: <message>`` and a
``hint:`` line (a multi-line message, such as a dataset's expected layout,
keeps its extra lines indented between them). ``--debug`` lets the
exception through with its traceback. Exceptions that are not user errors
(anything but ``ValueError``, ``TypeError``, ``OSError`` and
``FloatingPointError``, the types keras_sl raises for bad inputs and a
non-finite training loss) keep their traceback: they are bugs.

Standard library only: the CLI imports this before any backend.
"""

from __future__ import annotations

import argparse
import math
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Exceptions a user can cause (bad names, paths, files, values; a training loss
#: that became NaN, keras_sl.callbacks.NonFiniteLossError); others are bugs.
USER_ERRORS = (ValueError, TypeError, OSError, FloatingPointError)

DEBUG_HINT = "add --debug to see the traceback"


class CLIError(Exception):
    """A user error found by the CLI itself, with its hint and exit code."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.hint = hint
        self.exit_code = exit_code


def hint_for(err: BaseException) -> str:
    """What to do about a user error, from its type and message."""
    if isinstance(err, CLIError) and err.hint:
        return err.hint
    text = str(err)
    name = type(err).__name__
    if "Unknown preset" in text or "preset folder" in text or "metadata.json" in text or "config.json" in text:
        return "`keras-sl presets` lists the built-in presets; a preset folder holds config.json, " \
               "model.weights.h5 and metadata.json"
    if name in ("DatasetNotFoundError",) or "Unknown dataset" in text:
        return "--data must be the dataset's folder in its official layout; --dataset names its reader"
    if isinstance(err, FloatingPointError):
        return "look for NaN or Inf in the images and masks, or lower the learning rate"
    if name == "UnidentifiedImageError" or "cannot identify image" in text:
        return "pass image files Pillow can read (PNG, JPEG, TIFF, BMP, ...)"
    if isinstance(err, (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return "choose a path you can write to"
    if isinstance(err, FileNotFoundError):
        return "check the path"
    return ""


def _full_hint(err: BaseException) -> str:
    hint = hint_for(err)
    return f"{hint}; {DEBUG_HINT}" if hint else DEBUG_HINT


def message_of(err: BaseException) -> str:
    """The exception's message (``<file>: <reason>`` for OS errors), or its type when it has none."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return str(err).strip() or type(err).__name__


def report(command: str, err: BaseException, stream=None) -> None:
    """``keras-sl <command>: error: <first line>``, the message's other lines
    indented, then ``hint: ...``."""
    stream = stream or sys.stderr
    first, *rest = message_of(err).splitlines() or [type(err).__name__]
    lines = [f"keras-sl {command}: error: {first}"]
    lines += [f"  {line}" for line in rest if line.strip()]
    lines.append(f"hint: {_full_hint(err)}")
    print("\n".join(lines), file=stream, flush=True)


def file_message(path, err: BaseException) -> str:
    """The first line of ``err``'s message without a leading ``<path>:`` (the caller names the file)."""
    first = message_of(err).splitlines()[0]
    prefix = f"{path}: "
    return first[len(prefix):] if first.startswith(prefix) else first


def report_file_error(command: str, path, err: BaseException, stream=None) -> None:
    """One line for one failed file of a batch (the batch goes on)."""
    stream = stream or sys.stderr
    print(f"keras-sl {command}: error: {path}: {file_message(path, err)}", file=stream, flush=True)


# -- option value types (argparse ``type=``), checked before any work ------------------------------------------
def resolution_arg(text: str) -> int | tuple[int, int]:
    """``--resolution``: one side (``256``) or ``HEIGHTxWIDTH`` (``192x256``), positive integers."""
    parts = text.strip().lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected SIDE or HEIGHTxWIDTH, e.g. 256 or 192x256, got {text!r}")
    return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def positive_int(text: str) -> int:
    """An integer >= 1 (``--limit``, ``--epochs``, ``--batch-size``, ...)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def finite_float(text: str) -> float:
    """A finite number (NaN and infinities refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
