"""Download, verify and safely unpack a dataset's public archive(s).

:func:`download` fetches ``download_url`` of a reader class (one URL or a
tuple of URLs) with :mod:`urllib`, streaming to a temporary file next to the
data, checks the SHA-256 when one is known (and prints the computed digest
otherwise, so it can be pinned in ``download_sha256``), extracts ``.zip`` /
``.tar.gz`` / ``.tgz`` / ``.tar`` archives into ``root`` — refusing any
member that would land outside ``root`` — and returns the opened dataset.
Files that are not archives (e.g. NYU's ``.mat``) are moved into ``root``.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from keras_sl.datasets.base import Dataset, DatasetNotFoundError

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A download failed (network, HTTP status, checksum or unsafe archive)."""


def available() -> dict[str, type[Dataset]]:
    """``{name: reader class}`` of every reader :func:`download` knows by name."""
    from keras_sl.datasets import DATASETS
    from keras_sl.datasets.cityscapes import Cityscapes
    from keras_sl.datasets.diode import DIODE
    from keras_sl.datasets.kitti import KITTI
    from keras_sl.datasets.make3d import Make3D
    from keras_sl.datasets.modest import MODEST
    from keras_sl.datasets.nyu_depth_v2 import NYUDepthV2
    from keras_sl.datasets.seven_scenes import SevenScenes

    names = dict(DATASETS)
    names.update({c.name: c for c in (Cityscapes, Make3D, DIODE, KITTI, NYUDepthV2, MODEST, SevenScenes)})
    return names


def resolve(name_or_class) -> type[Dataset]:
    """Reader class from a name (``"kitti"``), a class or an instance."""
    if isinstance(name_or_class, Dataset):
        return type(name_or_class)
    if isinstance(name_or_class, type) and issubclass(name_or_class, Dataset):
        return name_or_class
    if isinstance(name_or_class, str):
        names = available()
        cls = names.get(name_or_class) or names.get(name_or_class.lower())
        if cls is None:
            raise ValueError(f"Unknown dataset {name_or_class!r}; available: {', '.join(sorted(names))}.")
        return cls
    raise TypeError(f"Expected a dataset name or Dataset class, got {type(name_or_class).__name__}.")


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value]


def _file_name(url: str) -> str:
    name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name)
    return name or "download"


def _expected_hashes(sha256, urls: list[str]) -> list[str | None]:
    """One expected digest (or None) per URL from a str, a sequence or a mapping
    keyed by URL or file name."""
    if sha256 is None:
        return [None] * len(urls)
    if isinstance(sha256, str):
        if len(urls) != 1:
            raise ValueError(f"One sha256 string given for {len(urls)} URLs; pass a list or a {{url: sha256}} dict.")
        return [sha256.strip().lower()]
    if isinstance(sha256, Mapping):
        out = [sha256.get(u, sha256.get(_file_name(u))) for u in urls]
        return [h.strip().lower() if h else None for h in out]
    hashes = list(sha256)
    if len(hashes) != len(urls):
        raise ValueError(f"{len(hashes)} sha256 values for {len(urls)} URLs.")
    return [h.strip().lower() if h else None for h in hashes]


def _manual_hint(cls: type[Dataset], root: Path, url: str | None = None) -> str:
    where = url or cls.homepage or "its publisher"
    if url and cls.homepage:
        where += f" (see {cls.homepage})"
    return f"Download it by hand from {where} and unpack it into {root} so that it reads:\n{cls.layout}"


def _archive_kind(name: str) -> str | None:
    low = name.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        return "tar"
    return None


def _check_member(root: Path, name: str, archive: str) -> Path:
    """Target path of archive member ``name``; raise if it escapes ``root``."""
    norm = name.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in parts:
        raise DownloadError(f"Refusing to extract {archive}: member {name!r} would be written outside {root}.")
    target = (root / norm).resolve()
    if not target.is_relative_to(root.resolve()):
        raise DownloadError(f"Refusing to extract {archive}: member {name!r} would be written outside {root}.")
    return target


def extract(archive: os.PathLike, root: os.PathLike, name: str | None = None) -> None:
    """Safely unpack a zip or tar archive into ``root``.

    Every member is checked before anything is written: absolute paths,
    ``..`` components, links pointing outside ``root`` and device files are
    rejected with :class:`DownloadError`.
    """
    archive, root = Path(archive), Path(root)
    label = name or archive.name
    kind = _archive_kind(label) or ("zip" if zipfile.is_zipfile(archive) else "tar")
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(root, info.filename, label)
                zf.extractall(root)
            return
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for m in members:
                target = _check_member(root, m.name, label)
                if m.issym() or m.islnk():
                    link = m.linkname.replace("\\", "/")
                    base = target.parent if m.issym() else root
                    if link.startswith("/") or not (base / link).resolve().is_relative_to(root.resolve()):
                        raise DownloadError(f"Refusing to extract {label}: link {m.name!r} -> {m.linkname!r} leaves {root}.")
                elif not (m.isfile() or m.isdir()):
                    raise DownloadError(f"Refusing to extract {label}: member {m.name!r} is a device or pipe.")
            if hasattr(tarfile, "data_filter"):
                tf.extractall(root, members=members, filter="data")
            else:  # pragma: no cover - Python without PEP 706 filters
                tf.extractall(root, members=members)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise DownloadError(f"{label} is not a valid {kind} archive ({err}); delete it and download again.") from err


def _fetch(url: str, folder: Path, progress: bool, timeout: float, hint: str) -> tuple[Path, str]:
    """Stream ``url`` to a temporary file in ``folder``; return (path, sha256)."""
    request = urllib.request.Request(url, headers={"User-Agent": "keras_sl-dataset-download"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"Downloading {url} failed: HTTP {err.code} {err.reason}. {hint}") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"Could not reach {url} ({reason}). Check the network connection and proxy settings "
            f"(HTTPS_PROXY/HTTP_PROXY), or pass url= a reachable mirror. {hint}"
        ) from err
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=folder)
    except OSError:
        response.close()
        raise
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, shown = 0, -1
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    step = int(100 * done / total) if total else done >> 24  # every 1% / 16 MiB
                    if step != shown:
                        shown = step
                        size = f"{done / 2**20:.1f}/{total / 2**20:.1f} MiB" if total else f"{done / 2**20:.1f} MiB"
                        print(f"\r{_file_name(url)}: {size}", end="", file=sys.stderr, flush=True)
            if progress:
                print(file=sys.stderr)
            if total and done != total:
                raise DownloadError(f"Download of {url} was cut short ({done} of {total} bytes). Try again. {hint}")
    except DownloadError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"Download of {url} failed midway ({err}). Try again. {hint}") from err
    return tmp, digest.hexdigest()


def download(
    name_or_class,
    root: str | os.PathLike,
    url: str | Sequence[str] | None = None,
    sha256: str | Sequence[str | None] | Mapping[str, str] | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Dataset:
    """Download a dataset into ``root`` and return it opened.

    Each archive is streamed to a temporary ``.download-*.part`` file inside
    ``root`` (so ``root`` needs room for an archive and its contents), then
    unpacked and deleted.

    Args:
        name_or_class: a reader name (``"kitti"``), class or instance.
        root: folder to unpack into (created if needed).
        url: override the class's ``download_url`` (e.g. a mirror); one URL or several.
        sha256: expected digest(s): a string, a list aligned with the URLs or
            a ``{url or file name: digest}`` dict. Defaults to the class's
            ``download_sha256`` when ``url`` is not given. Without one the
            computed digest is printed so it can be pinned.
        progress: print download progress to stderr.
        timeout: socket timeout in seconds.

    Raises:
        DatasetNotFoundError: the dataset has no public URL (the message says
            where to get it and how to arrange the files), or the unpacked
            files do not match the reader's layout.
        DownloadError: network/HTTP failure, checksum mismatch, or an unsafe
            or corrupt archive.
    """
    cls = resolve(name_or_class)
    root = Path(root).expanduser()
    urls = _as_list(url if url is not None else cls.download_url)
    if not urls:
        raise DatasetNotFoundError(
            f"{cls.name} has no public download URL (a login or licence agreement is needed). "
            f"Get it from {cls.homepage or 'its publisher'} and put the files under {root} as:\n{cls.layout}"
        )
    expected = _expected_hashes(sha256 if (sha256 is not None or url is not None) else cls.download_sha256, urls)
    root.mkdir(parents=True, exist_ok=True)
    for u, want in zip(urls, expected):
        name = _file_name(u)
        hint = _manual_hint(cls, root, u)
        tmp, got = _fetch(u, root, progress, timeout, hint)
        try:
            if want:
                if got != want:
                    raise DownloadError(
                        f"sha256 mismatch for {u}: expected {want}, got {got}. The file is corrupt or was "
                        f"changed upstream; try again, or pass sha256= the new digest if you trust it."
                    )
            else:
                print(f"{name}: sha256 {got} (pin it with download_sha256 / sha256=)")
            if _archive_kind(name):
                extract(tmp, root, name)
            else:
                os.replace(tmp, root / name)
        finally:
            tmp.unlink(missing_ok=True)
    nested = getattr(cls, "download_nested", None)
    if nested:
        for inner in sorted(root.glob(nested)):
            extract(inner, inner.parent)
            inner.unlink()
    return cls(root)
