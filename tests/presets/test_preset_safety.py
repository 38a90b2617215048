"""Presets refuse what they cannot trust (issue 21: bad cases 5, 8, 9 and the weak preset cases).

A folder without (or with a malformed) ``metadata.json`` / ``config.json`` is
refused naming the file; every load path checks the weights' sha256; an
archive URL that fails a check leaves nothing in the cache; ``save_to_preset``
does not replace a preset unless told to; names are names and paths are paths.
Host-side only: the messages are the same on every backend.
"""

import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

import keras_sl
from keras_sl import presets
from keras_sl.data import IDENTITY

META = {"dataset": "unit test", "input_size": [32, 32, 3], "normalization": IDENTITY, "license": "test"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One tiny SL-UNet preset, saved once per module (tests work on copies)."""
    model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, input_shape=(32, 32, 3))
    model.slice_head.set_selected([0, 3], [0.1, 0.5, 0.6, 0.2])
    return model.save_to_preset(tmp_path_factory.mktemp("saved") / "p", metadata=META)


@pytest.fixture
def preset(saved, tmp_path) -> Path:
    """A fresh copy of the tiny preset folder."""
    return Path(shutil.copytree(saved, tmp_path / "preset"))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("KERAS_SL_CACHE", str(folder))
    return folder


def flip_a_weights_byte(folder: Path) -> None:
    weights = folder / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))


def cached_presets(cache: Path) -> list[Path]:
    """Preset folders (anything holding a config.json) left in the cache."""
    return sorted(p.parent for p in cache.rglob("config.json")) if cache.exists() else []


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archive(folder: Path, dest: Path, kind: str = "zip", prefix: str = "my_preset/") -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zip":
        with zipfile.ZipFile(dest, "w") as z:
            for f in sorted(folder.iterdir()):
                z.write(f, prefix + f.name)
    else:
        with tarfile.open(dest, "w:gz") as t:
            for f in sorted(folder.iterdir()):
                t.add(f, prefix + f.name)
    return dest


LOADERS = {
    "from_preset": lambda p: keras_sl.SLUNet.from_preset(p),
    "load_preset": lambda p: presets.load_preset(p),
    "load_preset(load_weights=False)": lambda p: presets.load_preset(p, load_weights=False),
    "read_metadata": lambda p: presets.read_metadata(p),
}


# -- bad 5: a folder without metadata.json, malformed files ----------------------------------------
@pytest.mark.parametrize("loader", LOADERS, ids=str)
def test_folder_without_metadata_is_refused(preset, loader):
    (preset / "metadata.json").unlink()
    with pytest.raises(ValueError) as err:
        LOADERS[loader](str(preset))
    message = str(err.value)
    assert "metadata.json" in message and str(preset) in message
    assert "save_to_preset" in message  # how to make one


def test_metadata_without_weights_sha256_is_refused(preset):
    meta = json.loads((preset / "metadata.json").read_text())
    del meta["weights_sha256"]
    (preset / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="weights_sha256") as err:
        keras_sl.SLUNet.from_preset(str(preset))
    assert "metadata.json" in str(err.value)


MALFORMED_METADATA = {
    "not JSON": "{'dataset': 'single quotes'}",
    "empty file": "",
    "a list": "[1, 2]",
    "sha256 not a string": lambda m: json.dumps({**m, "weights_sha256": 12345}),
    "sha256 not hex": lambda m: json.dumps({**m, "weights_sha256": "not a digest"}),
    "input_size a string": lambda m: json.dumps({**m, "input_size": "32x32"}),
    "normalization a list": lambda m: json.dumps({**m, "normalization": [0.5, 0.5]}),
    "selected_slices strings": lambda m: json.dumps({**m, "selected_slices": ["a", "b"]}),
    "class_name of another model": lambda m: json.dumps({**m, "class_name": "UNet"}),
}


@pytest.mark.parametrize("case", MALFORMED_METADATA, ids=str)
def test_malformed_metadata_names_the_file(preset, case):
    meta = json.loads((preset / "metadata.json").read_text())
    edit = MALFORMED_METADATA[case]
    (preset / "metadata.json").write_text(edit(meta) if callable(edit) else edit)
    with pytest.raises(ValueError) as err:
        keras_sl.SLUNet.from_preset(str(preset))
    assert str(preset / "metadata.json") in str(err.value)
    assert type(err.value).__name__ != "JSONDecodeError"


MALFORMED_CONFIG = {
    "not JSON": "{\"class_name\": ",
    "a list": "[]",
    "no class_name": lambda c: json.dumps({k: v for k, v in c.items() if k != "class_name"}),
    "config not an object": lambda c: json.dumps({**c, "config": [1, 2]}),
    "unknown class": lambda c: json.dumps({**c, "class_name": "NoSuchNet", "module": "keras_sl.nowhere",
                                           "registered_name": "keras_sl>NoSuchNet"}),
    "bad argument": lambda c: json.dumps({**c, "config": {**c["config"], "levels": "three"}}),
}


@pytest.mark.parametrize("case", MALFORMED_CONFIG, ids=str)
def test_malformed_config_names_the_file(preset, case):
    config = json.loads((preset / "config.json").read_text())
    edit = MALFORMED_CONFIG[case]
    (preset / "config.json").write_text(edit(config) if callable(edit) else edit)
    with pytest.raises(ValueError) as err:
        presets.load_preset(str(preset))
    assert str(preset / "config.json") in str(err.value)
    assert type(err.value).__name__ not in ("JSONDecodeError", "AttributeError", "KeyError")


@pytest.mark.parametrize("loader", ["from_preset", "load_preset"])
def test_every_load_path_checks_the_weights_sha256(preset, loader):
    flip_a_weights_byte(preset)
    with pytest.raises(ValueError, match="sha256") as err:
        LOADERS[loader](str(preset))
    assert str(preset / "model.weights.h5") in str(err.value)


# -- weak: names are names, paths are paths --------------------------------------------------------
def test_a_weights_file_is_not_a_preset(preset):
    with pytest.raises(ValueError) as err:
        keras_sl.SLUNet.from_preset(str(preset / "model.weights.h5"))
    message = str(err.value)
    assert "Unknown preset" not in message
    assert "is a file" in message and "folder" in message and "save_to_preset" in message
    assert "load_weights" in message  # what to do with a weights file


def test_a_local_folder_does_not_shadow_a_builtin_name(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(preset, tmp_path / "kvasir")
    builtin = presets.builtin_dir() / "kvasir_sl_unet_8l2r"
    with pytest.warns(UserWarning, match=r"\./kvasir"):
        assert presets.resolve("kvasir") == builtin
    # anything that looks like a path is a path
    for spelling in ("./kvasir", Path("kvasir"), str(tmp_path / "kvasir"), "kvasir/"):
        assert Path(presets.resolve(spelling)).resolve() == (tmp_path / "kvasir").resolve(), spelling


def test_a_builtin_name_resolves_without_a_warning_when_nothing_shadows_it(tmp_path, monkeypatch, recwarn):
    monkeypatch.chdir(tmp_path)
    assert presets.resolve("kvasir") == presets.builtin_dir() / "kvasir_sl_unet_8l2r"
    assert not [w for w in recwarn if "kvasir" in str(w.message)]


def test_an_unregistered_name_is_a_path(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(preset, tmp_path / "my_preset")
    assert Path(presets.resolve("my_preset")).resolve() == (tmp_path / "my_preset").resolve()


def test_an_unknown_name_suggests_the_closest_builtin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as err:
        presets.resolve("kvasr")
    message = str(err.value)
    assert "Did you mean 'kvasir'" in message
    assert "Built-in presets" in message and all(name in message for name in presets.list_presets())


def test_a_missing_path_is_not_looked_up_as_a_name(tmp_path):
    with pytest.raises(ValueError) as err:
        presets.resolve(str(tmp_path / "kvasir"))
    message = str(err.value)
    assert "No preset folder" in message and str(tmp_path / "kvasir") in message


# -- bad 9: save_to_preset does not replace a preset silently --------------------------------------
def test_save_does_not_replace_another_preset(preset):
    before = sha256_of(preset / "model.weights.h5")
    other = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, input_shape=(32, 32, 3))
    with pytest.raises(FileExistsError, match="overwrite=True") as err:
        other.save_to_preset(preset, metadata={**META, "dataset": "other"})
    assert str(preset) in str(err.value)
    assert sha256_of(preset / "model.weights.h5") == before
    assert json.loads((preset / "metadata.json").read_text())["dataset"] == "unit test"
    other.save_to_preset(preset, metadata={**META, "dataset": "other"}, overwrite=True)
    assert json.loads((preset / "metadata.json").read_text())["dataset"] == "other"
    assert sorted(p.name for p in preset.iterdir()) == ["config.json", "metadata.json", "model.weights.h5"]
    assert presets.load_preset(str(preset)).preset_metadata["dataset"] == "other"


def test_save_into_a_new_or_empty_folder_needs_no_flag(saved, tmp_path):
    model = presets.load_preset(str(saved))
    (tmp_path / "empty").mkdir()
    assert model.save_to_preset(tmp_path / "empty", metadata=META) == tmp_path / "empty"
    assert model.save_to_preset(tmp_path / "a" / "b", metadata=META) == tmp_path / "a" / "b"
    with pytest.raises(FileExistsError, match="not a folder"):
        (tmp_path / "file").write_text("x")
        model.save_to_preset(tmp_path / "file", metadata=META)


def test_save_refuses_metadata_that_would_not_load(saved, tmp_path):
    model = presets.load_preset(str(saved))
    with pytest.raises(ValueError, match="input_size"):
        model.save_to_preset(tmp_path / "p", metadata={**META, "input_size": "32x32"})
    assert not (tmp_path / "p").exists()  # nothing half-written


def test_check_save_target_fails_before_any_work(preset, tmp_path):
    """Callers (keras-sl train / convert) check the target before hours of work."""
    with pytest.raises(FileExistsError, match="overwrite=True"):
        presets.check_save_target(preset)
    presets.check_save_target(preset, overwrite=True)
    presets.check_save_target(tmp_path / "new")
    assert not (tmp_path / "new").exists()


# -- bad 8: an archive URL that fails a check leaves nothing in the cache ----------------------------
def test_archive_failing_the_weights_check_is_not_cached(preset, tmp_path, cache):
    served = tmp_path / "www" / "preset.zip"
    broken = Path(shutil.copytree(preset, tmp_path / "broken"))
    flip_a_weights_byte(broken)
    archive(broken, served)
    url = served.as_uri()
    with pytest.raises(ValueError, match="sha256"):
        keras_sl.SLUNet.from_preset(url)
    assert cached_presets(cache) == []
    archive(preset, served)  # the archive is fixed upstream
    assert keras_sl.SLUNet.from_preset(url).selected_slices == [0, 3]
    assert len(cached_presets(cache)) == 1


def test_pinned_archive_sha256(preset, tmp_path, cache):
    served = archive(preset, tmp_path / "www" / "preset.tar.gz", kind="tar")
    good = sha256_of(served)
    with pytest.raises(ValueError, match="sha256") as err:
        keras_sl.SLUNet.from_preset(f"{served.as_uri()}#sha256={'0' * 64}")
    assert good in str(err.value) and "0" * 64 in str(err.value)
    assert cached_presets(cache) == [] and not [p for p in cache.rglob("*") if p.is_file()]
    model = keras_sl.SLUNet.from_preset(f"{served.as_uri()}#sha256={good.upper()}")
    assert model.selected_slices == [0, 3]


def test_a_tampered_cached_preset_is_evicted_and_downloaded_again(preset, tmp_path, cache):
    url = archive(preset, tmp_path / "www" / "preset.zip").as_uri()
    keras_sl.SLUNet.from_preset(url)
    [cached] = cached_presets(cache)
    flip_a_weights_byte(cached)
    with pytest.raises(ValueError, match="removed from the cache"):
        keras_sl.SLUNet.from_preset(url)
    assert cached_presets(cache) == []
    assert keras_sl.SLUNet.from_preset(url).selected_slices == [0, 3]


def test_an_archive_without_metadata_is_refused_and_not_cached(preset, tmp_path, cache):
    (preset / "metadata.json").unlink()
    url = archive(preset, tmp_path / "www" / "preset.zip").as_uri()
    with pytest.raises(ValueError, match="metadata.json"):
        keras_sl.SLUNet.from_preset(url)
    assert cached_presets(cache) == []


def test_an_archive_with_an_escaping_member_is_refused(preset, tmp_path, cache):
    served = tmp_path / "www" / "evil.tar.gz"
    served.parent.mkdir()
    with tarfile.open(served, "w:gz") as t:
        for f in sorted(preset.iterdir()):
            t.add(f, "my_preset/" + f.name)
        info = tarfile.TarInfo("../../evil.txt")
        info.size = 4
        t.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(OSError, match="Refusing to extract"):
        keras_sl.SLUNet.from_preset(served.as_uri())
    assert not list(tmp_path.rglob("evil.txt")) and cached_presets(cache) == []


@pytest.mark.parametrize("url,match", [
    ("ftp://example.invalid/p.zip", "only https://, http:// and file://"),
    ("file:///nowhere/p.zip#md5=abc", "#sha256="),
])
def test_unsupported_urls_say_what_is_supported(url, match, cache):
    with pytest.raises(ValueError, match=match):
        presets.resolve(url)


def test_preset_errors_are_one_type(preset):
    (preset / "metadata.json").unlink()
    with pytest.raises(presets.PresetError):
        presets.load_preset(str(preset))
    with pytest.raises(presets.PresetNotFoundError):
        presets.resolve("no_such_preset_anywhere")
    assert issubclass(presets.PresetNotFoundError, FileNotFoundError)


def test_a_missing_archive_says_could_not_download(tmp_path, cache):
    with pytest.raises(OSError, match="Could not download"):
        keras_sl.SLUNet.from_preset((tmp_path / "missing.zip").as_uri())
    assert cached_presets(cache) == []
