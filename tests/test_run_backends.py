"""tests/run_backends.py: the backends one after another, each over pytest-xdist workers, results summed."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _runner():
    spec = importlib.util.spec_from_file_location("run_backends", ROOT / "tests" / "run_backends.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_backend_gets_its_own_temporary_root(tmp_path):
    runner = _runner()
    command = runner._pytest_command("jax", ["-k", "x"], tmp_path)
    assert command[-1] == f"--basetemp={tmp_path / 'jax'}"
    assert runner._pytest_command("jax", ["--basetemp=/elsewhere"], tmp_path)[-1] == "--basetemp=/elsewhere"


def test_workers_unless_the_user_chose(tmp_path):
    runner = _runner()
    assert runner._pytest_command("jax", [], tmp_path, jobs=2)[-4:-1] == ["2", "--dist", "worksteal"]
    assert "-n" not in runner._pytest_command("jax", [], tmp_path, jobs=1)
    assert runner._pytest_command("jax", ["-n", "3"], tmp_path, jobs=2).count("-n") == 1


def test_jobs_setting(monkeypatch):
    runner = _runner()
    monkeypatch.setenv("KERAS_SL_TEST_JOBS", "4")
    assert runner._jobs() == 4
    monkeypatch.setenv("KERAS_SL_TEST_JOBS", "0")
    assert runner._jobs() == 1
    monkeypatch.setenv("KERAS_SL_TEST_JOBS", "two")
    with pytest.raises(SystemExit, match="KERAS_SL_TEST_JOBS must be a whole number"):
        runner._jobs()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_failing_backend_fails_the_run_and_counts_add_up(tmp_path, monkeypatch, capsys, jobs):
    (tmp_path / "test_probe.py").write_text(
        "import os\n"
        "def test_passes():\n    pass\n"
        "def test_fails_on_torch():\n    assert os.environ['KERAS_BACKEND'] != 'torch'\n"
    )
    monkeypatch.setenv("KERAS_SL_BACKENDS", "numpy,torch")
    monkeypatch.setenv("KERAS_SL_TEST_JOBS", jobs)
    code = _runner().main([str(tmp_path / "test_probe.py")])
    out = capsys.readouterr().out
    assert code == 1
    assert "failing: torch;" in out
    assert out.strip().splitlines()[-1] == "3 passed, 1 failed, 0 skipped"
    assert "[numpy] exit code 0" in out and "[torch] exit code 1" in out
