"""The wheel ships the built-in presets: they load from a non-editable install."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds inside the source folder (build/, *.egg-info): build from a copy, so
    # that the backends' concurrent test runs (tests/run_backends.py) never share one.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("keras_sl", "pretrained"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
            check=True, capture_output=True, timeout=300,
        )
    except subprocess.CalledProcessError as err:
        pytest.fail(f"building the wheel failed: {err.stderr.decode()[-2000:]}")
    return next(out.glob("*.whl"))


def test_wheel_contains_pretrained_folder(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "keras_sl/pretrained/__init__.py" in names
    shipped = {p.name for p in (ROOT / "pretrained").iterdir() if p.is_dir() and (p / "config.json").is_file()}
    for preset in shipped:
        for f in ("config.json", "model.weights.h5", "metadata.json"):
            assert f"keras_sl/pretrained/{preset}/{f}" in names


def test_installed_package_finds_builtin_presets(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    code = (
        "import keras_sl, keras_sl.presets as p; "
        "assert keras_sl.__file__.startswith(%r), keras_sl.__file__; "
        "print(p.builtin_dir()); print(sorted(p.list_presets()))" % str(target)
    )
    env = dict(os.environ, PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder, names = proc.stdout.strip().splitlines()[-2:]
    assert folder.startswith(str(target))
    shipped = [p.name for p in (ROOT / "pretrained").iterdir() if (p / "config.json").is_file()]
    aliases = json.loads((ROOT / "pretrained" / "aliases.json").read_text())
    assert names == str(sorted(shipped + list(aliases)))
