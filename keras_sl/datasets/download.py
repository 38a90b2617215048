"""Download, verify and safely unpack a dataset's public archive(s).

:func:`download` fetches each ``download_url`` of a reader class (one URL or
a tuple of URLs) with :func:`fetch` — ``keras.utils.get_file`` into a private
``.download-*`` folder inside ``root``, sha256 checked when a digest is known
(otherwise the computed digest is printed, so it can be pinned in
``download_sha256``) — then :func:`extract`\\ s ``.zip`` / ``.tar.gz`` /
``.tgz`` / ``.tar`` archives into ``root`` and returns the opened dataset.
Files that are not archives (e.g. NYU's ``.mat``) are moved into ``root``.

Nothing is kept from a failed download: a file that fails its sha256 check is
deleted (a retry downloads it again), and an archive with any member that
would land outside ``root`` is refused before anything is written.
:func:`fetch` and :func:`extract` also serve preset archives
(:mod:`keras_sl.presets`).
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import socket
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

from keras_sl.datasets.base import Dataset, DatasetNotFoundError
from keras_sl.utils.files import sha256_file


class DownloadError(OSError):
    """A download failed (network, HTTP status, checksum or unsafe archive)."""


class ChecksumError(DownloadError, ValueError):
    """A downloaded file's sha256 is not the expected one (the file is deleted)."""


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


def file_name(url: str) -> str:
    """The file name at the end of ``url`` (``"download"`` if it has none)."""
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
        out = [sha256.get(u, sha256.get(file_name(u))) for u in urls]
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


def archive_kind(name: str) -> str | None:
    """``"zip"``, ``"tar"`` or None (not an archive) from a file name."""
    low = name.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        return "tar"
    return None


# -- fetching ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_or_stderr(progress: bool, timeout: float) -> Iterator[None]:
    """``keras.utils.get_file`` prints its progress bar on stdout and takes no
    timeout: send the bar to stderr (or nowhere) and bound socket waits."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        with contextlib.redirect_stdout(sys.stderr if progress else io.StringIO()):
            yield
    finally:
        socket.setdefaulttimeout(previous)


def _network_cause(err: BaseException) -> BaseException | None:
    """The urllib / OS error behind ``get_file``'s plain ``Exception``."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (urllib.error.URLError, OSError)):
            return err
        err = err.__cause__ or err.__context__
    return None


def fetch(
    url: str,
    folder: os.PathLike,
    sha256: str | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    hint: str = "",
    mismatch_hint: str = "if you trust the new file, pass its digest as sha256=.",
) -> tuple[Path, str]:
    """Download ``url`` into ``folder`` with ``keras.utils.get_file``; return ``(path, sha256)``.

    ``sha256`` (hex, any case) is checked after the download: on a mismatch
    the file is deleted and :class:`ChecksumError` says both digests. Network
    and HTTP failures raise :class:`DownloadError` ending with ``hint``; a
    partial file is never left behind. ``http(s)://`` and ``file://`` URLs work.
    """
    import keras

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = file_name(url)
    want = sha256.strip().lower() if sha256 else None
    target = folder / name
    try:
        with _quiet_or_stderr(progress, timeout):
            path = Path(keras.utils.get_file(
                fname=name, origin=url, file_hash=want, hash_algorithm="sha256",
                cache_dir=str(folder), cache_subdir=str(folder.resolve()), extract=False, force_download=True,
            ))
    except ValueError as err:
        if not (want and target.is_file()):
            raise DownloadError(f"Downloading {url} failed: {err} {hint}".rstrip()) from err
        got = sha256_file(target)
        target.unlink()
        raise ChecksumError(
            f"sha256 mismatch for {url}: expected {want}, got {got}. The file is corrupt or was changed "
            f"upstream; it was deleted, so trying again downloads it again. Or, {mismatch_hint}"
        ) from None
    except Exception as err:  # get_file wraps urllib's errors in a plain Exception
        target.unlink(missing_ok=True)
        cause = _network_cause(err)
        if isinstance(cause, urllib.error.HTTPError):
            raise DownloadError(f"Downloading {url} failed: HTTP {cause.code} {cause.reason}. {hint}".rstrip()) from err
        if isinstance(cause, urllib.error.ContentTooShortError):
            raise DownloadError(
                f"Download of {url} was cut short ({cause.reason}). Try again. {hint}".rstrip()
            ) from err
        if isinstance(cause, (urllib.error.URLError, OSError)):
            reason = getattr(cause, "reason", cause)
            raise DownloadError(
                f"Could not reach {url} ({reason}). Check the address, the network connection and proxy "
                f"settings (HTTPS_PROXY/HTTP_PROXY), or use a reachable mirror. {hint}".rstrip()
            ) from err
        raise
    except BaseException:  # KeyboardInterrupt: get_file removed its partial file; make sure
        target.unlink(missing_ok=True)
        raise
    return path, want or sha256_file(path)


# -- safe extraction ------------------------------------------------------------------------------
def _refuse(archive: str, why: str) -> DownloadError:
    return DownloadError(f"Refusing to extract {archive}: {why}. Nothing was extracted.")


def _member_path(root: Path, name: str, archive: str) -> str:
    """Normalised relative POSIX path of member ``name``; refuse one leaving ``root``."""
    norm = name.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in parts:
        raise _refuse(archive, f"member {name!r} would be written outside {root}")
    rel = posixpath.normpath(norm)
    target = (root / rel).resolve()  # follows links already on disk
    if not target.is_relative_to(root.resolve()):
        raise _refuse(archive, f"member {name!r} would be written outside {root}")
    return rel


def _through_link(rel: str, links: set[str], itself: bool = False) -> str | None:
    """The archive link among the parent folders of ``rel`` (and ``rel``
    itself when ``itself``), if any."""
    parts = rel.split("/")
    for i in range(1, len(parts) + int(itself)):
        parent = "/".join(parts[:i])
        if parent in links:
            return parent
    return None


def _check_tar(members: list[tarfile.TarInfo], root: Path, label: str) -> None:
    """Refuse the archive if any member, link target or link chain leaves ``root``."""
    links: set[str] = set()
    for m in members:
        rel = _member_path(root, m.name, label)
        via = _through_link(rel, links)
        if via is not None:
            raise _refuse(label, f"member {m.name!r} would be written through the link {via!r}")
        if m.issym() or m.islnk():
            link = m.linkname.replace("\\", "/")
            if link.startswith("/") or re.match(r"^[A-Za-z]:", link):
                raise _refuse(label, f"link {m.name!r} -> {m.linkname!r} points outside {root}")
            base = posixpath.dirname(rel) if m.issym() else ""
            target = posixpath.normpath(posixpath.join(base, link))
            if target == ".." or target.startswith("../") or _through_link(target, links, itself=True) \
                    or not (root / target).resolve().is_relative_to(root.resolve()):
                raise _refuse(label, f"link {m.name!r} -> {m.linkname!r} leaves {root}")
            links.add(rel)
        elif not (m.isfile() or m.isdir()):
            raise _refuse(label, f"member {m.name!r} is a device or pipe")


def extract(archive: os.PathLike, root: os.PathLike, name: str | None = None) -> None:
    """Safely unpack a zip or tar archive into ``root``.

    Every member is checked before anything is written: absolute paths,
    ``..`` components, links pointing outside ``root`` (alone or chained
    through other links of the archive) and device files make the whole
    archive refused with :class:`DownloadError`. Tar archives are then
    extracted with Python's ``"data"`` filter as a second line of defence.
    """
    archive, root = Path(archive), Path(root)
    label = name or archive.name
    kind = archive_kind(label) or ("zip" if zipfile.is_zipfile(archive) else "tar")
    root.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _member_path(root, info.filename, label)
                zf.extractall(root)
            return
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            _check_tar(members, root, label)
            if hasattr(tarfile, "data_filter"):
                tf.extractall(root, members=members, filter="data")
            else:  # pragma: no cover - Python without PEP 706 filters (3.10 before 3.10.12)
                tf.extractall(root, members=members)
    except getattr(tarfile, "FilterError", ()) as err:  # pragma: no cover - _check_tar refuses these first
        raise _refuse(label, str(err)) from err
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise DownloadError(f"{label} is not a valid {kind} archive ({err}); delete it and download again.") from err


# -- datasets ------------------------------------------------------------------------------------
def _check_writable(root: Path) -> None:
    if not os.access(root, os.W_OK):
        raise DownloadError(f"Cannot write into {root}: pass a root folder you can write to.")


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

    Each file is downloaded with ``keras.utils.get_file`` into a temporary
    ``.download-*`` folder inside ``root`` (so ``root`` needs room for an
    archive and its contents), checked, unpacked and deleted; ``http(s)://``
    and ``file://`` URLs work.

    Args:
        name_or_class: a reader name (``"kitti"``), class or instance.
        root: folder to unpack into (created if needed).
        url: override the class's ``download_url`` (e.g. a mirror); one URL or several.
        sha256: expected digest(s): a string, a list aligned with the URLs or
            a ``{url or file name: digest}`` dict. Defaults to the class's
            ``download_sha256`` when ``url`` is not given. Without one the
            computed digest is printed so it can be pinned.
        progress: show the download progress bar (on stderr).
        timeout: socket timeout in seconds.

    Raises:
        DatasetNotFoundError: the dataset has no public URL (the message says
            where to get it and how to arrange the files), or the unpacked
            files do not match the reader's layout.
        DownloadError: network/HTTP failure, checksum mismatch
            (:class:`ChecksumError`; the file is deleted, so a retry downloads
            it again), or an unsafe or corrupt archive.
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
    _check_writable(root)
    for u, want in zip(urls, expected):
        name = file_name(u)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
            path, got = fetch(u, tmp, want, progress=progress, timeout=timeout, hint=_manual_hint(cls, root, u),
                              mismatch_hint="if you trust the new file, pass its digest as sha256=.")
            if not want:
                print(f"{name}: sha256 {got} (pin it with download_sha256 / sha256=)")
            if archive_kind(name):
                extract(path, root, name)
            else:
                os.replace(path, root / name)
    nested = getattr(cls, "download_nested", None)
    if nested:
        for inner in sorted(root.glob(nested)):
            extract(inner, inner.parent)
            inner.unlink()
    return cls(root)
