"""Preset archives at a URL: download once, check, unpack, cache; evict what fails.

``https://``, ``http://`` and ``file://`` URLs of a ``.zip`` / ``.tar.gz``
archive holding one preset folder are downloaded with ``keras.utils.get_file``
(:func:`keras_sl.datasets.download.fetch`: progress on stderr, the archive's
sha256 checked when the URL pins one as ``#sha256=<hex>``), unpacked with
the safe :func:`keras_sl.datasets.download.extract` and checked like any
preset (config, metadata, weights sha256) *before* the folder enters the
cache ``$KERAS_SL_CACHE/presets/<hash of the URL>``. A download that fails a
check leaves nothing behind, and a cached folder that later fails a check is
removed (:func:`evict`), so the next call downloads it again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.parse
from pathlib import Path

from keras_sl import config
from keras_sl.presets.errors import PresetError
from keras_sl.presets.preset_files import CONFIG_FILE, verify_folder

URL_SCHEMES = ("https", "http", "file")
_PIN = re.compile(r"^sha256=([0-9a-fA-F]{64})$")


def cache_dir() -> Path:
    """Where downloaded presets are kept: ``$KERAS_SL_CACHE/presets``."""
    return config.cache_dir() / "presets"


def split_pin(url: str) -> tuple[str, str | None]:
    """``(url without fragment, pinned sha256 or None)`` from ``url[#sha256=<hex>]``."""
    origin, fragment = urllib.parse.urldefrag(url)
    if not fragment:
        return origin, None
    match = _PIN.match(fragment)
    if not match:
        raise PresetError(
            f"The preset URL {url} ends in #{fragment}; the only fragment a preset URL takes is "
            "#sha256=<64 hex digits> (the archive's sha256, checked after the download)."
        )
    return origin, match.group(1).lower()


def cached_folder(url: str) -> Path:
    """The cache folder of ``url`` (whether or not it is there yet)."""
    return cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16]


def evict(folder: os.PathLike) -> bool:
    """Remove ``folder`` if it is a downloaded preset in the cache; True if it was."""
    folder = Path(folder)
    try:
        in_cache = folder.resolve().parent == cache_dir().resolve()
    except OSError:
        return False
    if in_cache and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        return True
    return False


def download_preset(url: str, progress: bool = True, timeout: float = 60.0) -> Path:
    """The cached, checked preset folder of an archive URL (downloaded on first use)."""
    from keras_sl.datasets.download import ChecksumError, DownloadError, archive_kind, extract, fetch, file_name

    origin, pin = split_pin(url)
    target = cached_folder(url)
    if (target / CONFIG_FILE).is_file():
        return target
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    except OSError as err:
        raise DownloadError(
            f"Cannot write the preset cache {root} ({err}): set KERAS_SL_CACHE to a folder you can write to."
        ) from err
    try:
        try:
            archive, _ = fetch(origin, work / "archive", pin, progress=progress, timeout=timeout,
                               mismatch_hint=f"if you trust the new archive, pin its digest: {origin}#sha256=<digest>.")
        except ChecksumError:
            raise
        except DownloadError as err:
            raise DownloadError(
                f"Could not download preset from {origin}. {err} Or download the archive by hand, unpack it and "
                "pass the folder to from_preset()."
            ) from err
        name = file_name(origin)
        if archive_kind(name) is None and not _is_archive(archive):
            raise PresetError(f"{origin} is neither a .zip nor a .tar.gz preset archive.")
        extract(archive, work / "unpacked", name)
        found = sorted(p.parent for p in (work / "unpacked").rglob(CONFIG_FILE))
        if len(found) != 1:
            raise PresetError(
                f"The archive at {origin} must hold exactly one preset folder (with {CONFIG_FILE}), found "
                f"{len(found)}. Make it from a folder written by save_to_preset."
            )
        try:
            verify_folder(found[0])
        except PresetError as err:
            raise PresetError(f"The preset downloaded from {origin} is not usable; nothing was cached. {err}") from err
        try:
            os.replace(found[0], target)
        except OSError:
            if not (target / CONFIG_FILE).is_file():  # else: another process cached it meanwhile
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _is_archive(path: Path) -> bool:
    import tarfile
    import zipfile

    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)
