"""Exceptions for presets that are missing, malformed or fail their integrity check."""

from __future__ import annotations


class PresetError(ValueError):
    """A preset cannot be used: a file is missing or malformed, the weights
    do not match their sha256, or the name or path points at no preset. The
    message names the file and says how to fix it."""


class PresetNotFoundError(PresetError, FileNotFoundError):
    """No built-in preset by that name and no preset folder at that path."""
