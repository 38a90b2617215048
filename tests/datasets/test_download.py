"""``keras_sl.datasets.download`` on local fixtures (``file://`` URLs, no network).

The download goes through ``keras.utils.get_file``; what keras_sl adds is
checked here: a failed sha256 check leaves nothing behind (a retry downloads
again), archives are refused whole when any member would land outside the
target (``..``, absolute paths, links leaving it, link chains, devices), and
progress goes to stderr only when asked. Host-side only: no backend work.
"""

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from keras_sl.datasets import download as download_function
from keras_sl.datasets.base import Dataset, Sample
from keras_sl.datasets.download import DownloadError, download, extract


class Tiny(Dataset):
    """A reader for ``<root>/items/<id>.txt`` files (one sample each)."""

    name = "tiny_download_test"
    layout = "  <root>/items/<id>.txt"
    homepage = "https://example.invalid/tiny"

    def find_samples(self):
        folder = self.root / "items"
        files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
        return [Sample(p.stem, p, (p,)) for p in files]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_zip(path: Path, n: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            zf.writestr(f"items/{i:02d}.txt", f"item {i}")
    return path


def entries(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def test_the_package_exports_the_function():
    assert download_function is download


def test_file_url_with_checksum(tmp_path):
    served = tiny_zip(tmp_path / "www" / "tiny.zip")
    root = tmp_path / "data"
    ds = download(Tiny, root, url=served.as_uri(), sha256=sha256_of(served).upper(), progress=False)
    assert isinstance(ds, Tiny) and [s.id for s in ds.samples] == ["00", "01", "02"]
    assert entries(root) == ["items", "items/00.txt", "items/01.txt", "items/02.txt"]  # archive and temp gone


def test_a_failed_checksum_leaves_nothing_and_a_retry_downloads_again(tmp_path):
    served = tiny_zip(tmp_path / "www" / "tiny.zip")
    root = tmp_path / "data"
    wrong = "0" * 64
    with pytest.raises(DownloadError, match="sha256 mismatch") as err:
        download(Tiny, root, url=served.as_uri(), sha256=wrong, progress=False)
    assert sha256_of(served) in str(err.value) and wrong in str(err.value)
    assert entries(root) == []
    ds = download(Tiny, root, url=served.as_uri(), sha256=sha256_of(served), progress=False)
    assert len(ds) == 3


def test_plain_files_are_moved_into_root(tmp_path):
    served = tmp_path / "www" / "items.txt"
    served.parent.mkdir()
    served.write_text("not an archive")
    tiny_zip(tmp_path / "www" / "tiny.zip")
    root = tmp_path / "data"
    download(Tiny, root, url=[served.as_uri(), (tmp_path / "www" / "tiny.zip").as_uri()],
             sha256={"items.txt": sha256_of(served)}, progress=False)
    assert (root / "items.txt").read_text() == "not an archive"


def test_progress_goes_to_stderr_and_can_be_silenced(tmp_path, capsys):
    served = tiny_zip(tmp_path / "www" / "tiny.zip")
    download(Tiny, tmp_path / "a", url=served.as_uri(), sha256=sha256_of(served), progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    download(Tiny, tmp_path / "b", url=served.as_uri(), progress=True)
    captured = capsys.readouterr()
    assert "tiny.zip" in captured.err
    assert captured.out.strip() == f"tiny.zip: sha256 {sha256_of(served)} (pin it with download_sha256 / sha256=)"


def test_a_missing_file_url_says_what_to_do(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="Could not reach") as err:
        download(Tiny, root, url=(tmp_path / "missing.zip").as_uri(), progress=False)
    assert Tiny.layout in str(err.value) and "by hand" in str(err.value)
    assert entries(root) == []


# -- safe extraction -----------------------------------------------------------------------------
def _file(name: str, data: bytes = b"data") -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _special(name: str, kind) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


MALICIOUS_TARS = {
    "parent": [_file("ok/readme.txt"), _file("../evil.txt")],
    "absolute": [_file("ok/readme.txt"), _file("/tmp/abs/evil.txt")],
    "symlink out": [_file("ok/readme.txt"), _link("ok/link", "../../outside")],
    "absolute symlink": [_file("ok/readme.txt"), _link("ok/link", "/etc")],
    "hardlink out": [_file("ok/readme.txt"), _link("ok/hard", "../../etc/passwd", tarfile.LNKTYPE)],
    # each link alone stays inside, together they leave: a -> ".", a/b -> ".." is root/..
    "symlink chain": [_link("a", "."), _link("a/b", ".."), _file("a/b/evil.txt")],
    "device": [_file("ok/readme.txt"), _special("ok/dev", tarfile.CHRTYPE)],
    "fifo": [_file("ok/readme.txt"), _special("ok/fifo", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", MALICIOUS_TARS, ids=str)
def test_a_malicious_tar_is_refused_whole(tmp_path, case):
    served = tmp_path / "www" / "bad.tar.gz"
    served.parent.mkdir()
    with tarfile.open(served, "w:gz") as tf:
        for info, data in MALICIOUS_TARS[case]:
            tf.addfile(info, data)
    root = tmp_path / "deep" / "root"
    with pytest.raises(DownloadError, match="Refusing to extract") as err:
        download(Tiny, root, url=served.as_uri(), progress=False)
    assert "bad.tar.gz" in str(err.value)
    assert entries(root) == []  # nothing extracted, not even the safe members
    assert not list(tmp_path.rglob("evil.txt"))


@pytest.mark.parametrize("member", ["../evil.txt", "ok/../../evil.txt", "/abs/evil.txt", "C:/evil.txt"])
def test_a_malicious_zip_is_refused_whole(tmp_path, member):
    served = tmp_path / "www" / "bad.zip"
    served.parent.mkdir()
    with zipfile.ZipFile(served, "w") as zf:
        zf.writestr("ok/readme.txt", "fine")
        zf.writestr(member, "escaped")
    root = tmp_path / "deep" / "root"
    with pytest.raises(DownloadError, match="Refusing to extract") as err:
        download(Tiny, root, url=served.as_uri(), progress=False)
    assert member in str(err.value)
    assert entries(root) == [] and not list(tmp_path.rglob("evil.txt"))


def test_links_inside_the_target_are_kept(tmp_path):
    archive = tmp_path / "good.tar"
    with tarfile.open(archive, "w") as tf:
        for info, data in [_file("items/00.txt", b"zero"), _link("items/01.txt", "00.txt"),
                           _link("latest", "items")]:
            tf.addfile(info, data)
    root = tmp_path / "root"
    extract(archive, root)
    assert (root / "items" / "01.txt").read_text() == "zero" and (root / "latest" / "00.txt").is_file()


def test_a_corrupt_archive_says_so(tmp_path):
    served = tmp_path / "www" / "broken.zip"
    served.parent.mkdir()
    served.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DownloadError, match="not a valid zip archive"):
        download(Tiny, tmp_path / "root", url=served.as_uri(), progress=False)
