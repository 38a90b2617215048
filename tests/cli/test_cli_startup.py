"""A quiet, quick CLI: ``--help`` and argument errors import no backend, and
no command prints TensorFlow / absl start-up lines. Run as real processes."""

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_sl.cli import build_parser, main

BACKEND_MODULES = ("keras", "tensorflow", "jax", "jaxlib", "torch")
# What TensorFlow and absl print when they start with their default log levels.
NOISE = re.compile(r"absl::InitializeLog|^[IWE]\d{4} |oneDNN custom operations|cpu_feature_guard|"
                   r"rebuild TensorFlow with the appropriate compiler flags|^WARNING:absl|^INFO:absl")


def _cli(*args, backend="tensorflow", script=None):
    """Run the command in a fresh process with Python's import log on
    (``PYTHONPROFILEIMPORTTIME``) and TensorFlow's log at its default."""
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPROFILEIMPORTTIME="1")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    command = [script] if script else [sys.executable, "-m", "keras_sl.cli"]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)


def _imported(stderr: str) -> set[str]:
    """Top-level packages in the import log."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["bench", "--models", "resnet_5l1r"],
                                  ["train", "--dataset", "kvasir"], ["evaluate"]])
def test_help_and_argument_errors_import_no_backend(args):
    proc = _cli(*args)
    assert proc.returncode == (0 if "--help" in args else 2), proc.stderr[-2000:]
    imported = _imported(proc.stderr)
    assert "keras_sl" in imported  # the log works
    assert not imported & set(BACKEND_MODULES), imported & set(BACKEND_MODULES)
    if "--help" in args:
        assert proc.stdout.startswith("usage: keras-sl")
    else:
        assert "error:" in proc.stderr


def test_the_installed_script_answers_help_without_a_backend():
    script = Path(sys.executable).parent / "keras-sl"
    if not script.is_file():
        pytest.skip(f"no keras-sl console script next to {sys.executable}")
    proc = _cli("--help", script=str(script))
    assert proc.returncode == 0 and proc.stdout.startswith("usage: keras-sl")
    assert not _imported(proc.stderr) & set(BACKEND_MODULES)


_TINY_BENCH = ["bench", "--models", "unet_5l1r", "--resolution", "32", "--batch", "1", "--mode", "infer",
               "--repeats", "1", "--warmup", "1", "--matmul-size", "64"]


@pytest.mark.parametrize("backend, args, expected", [
    ("tensorflow", ["presets"], "kvasir"),  # TensorFlow loads with Keras
    # other backends: Keras imports TensorFlow later when it is installed (set_random_seed)
    *([(keras.backend.backend(), _TINY_BENCH, "unet_5l1r")] if keras.backend.backend() != "tensorflow" else []),
])
def test_commands_print_no_start_up_logs(backend, args, expected):
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, "-m", "keras_sl.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expected in proc.stdout
    noise = [line for line in proc.stderr.splitlines() if NOISE.search(line)]
    assert not noise, proc.stderr[-2000:]


def _train_args(*extra):
    return build_parser().parse_args(["train", "--dataset", "kvasir", "--data", "d", "--out", "o", *extra])


@pytest.mark.parametrize("extra, name", [
    ([], "sl_unet_5l1r"),
    (["--model", "unet_8l2r"], "unet_8l2r"),
    (["--model", "sl_unet", "--levels", "8", "--res", "2"], "sl_unet_8l2r"),  # the family form
    (["--model", "unet", "--res", "2"], "unet_5l2r"),
    (["--levels", "5"], "sl_unet_5l1r"),  # agrees with the default name
])
def test_train_model_names_resolve_through_the_registry(extra, name):
    from keras_sl.cli import _check_models

    args = _train_args(*extra)
    _check_models(build_parser(), args)
    assert args.model_name == name


@pytest.mark.parametrize("extra, message", [
    (["--model", "resnet_5l1r"], "Unknown model 'resnet_5l1r'"),
    (["--model", "sl_unet_8l2r", "--levels", "5"], "cannot take"),
    (["--model", "unet", "--levels", "6"], "No 'unet' model"),
])
def test_bad_train_models_are_argument_errors(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "kvasir", "--data", "d", "--out", "o", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
