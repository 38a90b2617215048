"""benchmarks/monai_comparison.py: keras_sl SL-UNet vs MONAI in plain PyTorch (tiny sizes)."""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from conftest import monai_skip_reason

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "monai_comparison.py"
ROUNDS = 2
ARGS = ["--resolution", "32", "--batch", "1", "--rounds", str(ROUNDS), "--warmup", "1", "--matmul-size", "256"]


def _script():
    spec = importlib.util.spec_from_file_location("monai_comparison", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _skip_reason():
    if keras.backend.backend() != "torch":
        return f"the MONAI comparison runs on torch only (this run: {keras.backend.backend()})"
    return monai_skip_reason()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``(report returned by main, the JSON file main wrote)``."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    path = tmp_path_factory.mktemp("monai_comparison") / "out.json"
    report = _script().main([*ARGS, "--json", str(path)])
    return report, json.loads(path.read_text())


def test_json_structure(run):
    report, written = run
    assert written == json.loads(json.dumps(report, allow_nan=False))  # what main returns is what it writes
    assert written["command"] == "KERAS_BACKEND=torch python benchmarks/monai_comparison.py " + " ".join(
        [*ARGS, "--json", written["command"].split("--json ")[1]])
    machine = written["machine"]
    for key in ("cpu_model", "cpu_count", "platform", "python", "keras", "backend_version", "monai", "keras_sl",
                "torch_threads", "date", "loadavg_start", "loadavg_end", "matmul_gflops"):
        assert machine[key], key
    assert machine["backend"] == "torch"
    settings = written["settings"]
    assert (settings["resolution"], settings["batch"], settings["rounds"], settings["mode"]) == (32, 1, ROUNDS, "both")
    assert [r["mode"] for r in written["rows"]] == ["infer", "train"]
    for row in written["rows"]:
        for side in ("keras_sl", "monai"):
            times = row[f"{side}_times_s"]
            assert len(times) == ROUNDS and len(row[f"{side}_page_faults"]) == ROUNDS
            assert row[f"{side}_median_s"] == pytest.approx(statistics.median(times))
        assert len(row["ratios"]) == ROUNDS


def test_ratios_positive(run):
    for row in run[0]["rows"]:
        assert all(r > 0 for r in row["ratios"])
        assert row["ratios"] == pytest.approx([a / b for a, b in zip(row["keras_sl_times_s"], row["monai_times_s"])])
        q1, q3 = row["ratio_quartiles"]
        assert 0 < min(row["ratios"]) <= q1 <= row["ratio_median"] <= q3 <= max(row["ratios"])


def test_same_function(run):
    check = run[0]["check"]
    assert check["lifted_logits_shape"] == [1, 16, 32, 32, 1]
    assert check["lifted_logits_max_abs"] > 1e-2  # a non-trivial output to compare
    assert check["lifted_logits_max_abs_diff"] < 1e-4
    assert check["prediction_max_abs_diff"] < 1e-4
    assert len(check["selected_slices"]) == 5
    losses = check["first_train_losses"]
    # Same weights and batch: the first losses agree; the second follows one AdamW step on each side.
    assert losses["keras_sl"][0] == pytest.approx(losses["monai"][0], abs=1e-4)
    assert losses["keras_sl"][1] == pytest.approx(losses["monai"][1], abs=1e-3)
    assert losses["keras_sl"][1] < losses["keras_sl"][0]  # the step trained


def test_table_lists_both_rows(run):
    table = _script().format_table(run[0])
    assert "inference" in table and "train step" in table and "MONAI 1." in table


def test_refuses_without_monai(monkeypatch):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    script = _script()
    monkeypatch.setitem(sys.modules, "monai", None)  # makes `import monai` fail
    with pytest.raises(script.Refused, match="MONAI is not importable"):
        script.main(ARGS)


def test_refuses_this_backend_unless_torch():
    if keras.backend.backend() == "torch":
        pytest.skip("torch is the backend the comparison runs on")
    script = _script()
    with pytest.raises(script.Refused, match=f"Keras backend here: {keras.backend.backend()}"):
        script.main(ARGS)


def test_refuses_other_backends():
    """Runs on every backend: the script refuses before importing Keras."""
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *ARGS], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode != 0
    assert "needs KERAS_BACKEND=torch" in proc.stderr and "(Keras backend here: jax)" in proc.stderr
    assert not proc.stdout
