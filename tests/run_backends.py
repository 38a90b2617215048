"""Run the test suite once per Keras backend; fail if any backend fails.

Usage: ``python tests/run_backends.py [pytest args...]``. Each backend runs in
fresh processes (Keras picks its backend at import), one backend after
another, each spread over two pytest-xdist workers that steal work from each
other: most of the suite is single-threaded tracing and compiling, so on a
2-core machine both cores stay busy to the end of every backend (two whole
backends side by side left one core idle while the longest, JAX, finished).
``KERAS_SL_TEST_JOBS=1`` runs one process per backend (also the fallback
without pytest-xdist); ``KERAS_SL_BACKENDS=torch,jax`` runs a subset.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _jobs(n_backends: int | None = None) -> int:
    """pytest-xdist workers per backend (``KERAS_SL_TEST_JOBS``, default 2)."""
    del n_backends  # workers split one backend's tests, whatever the number of backends
    value = os.environ.get("KERAS_SL_TEST_JOBS", "2")
    try:
        jobs = int(value)
    except ValueError:
        raise SystemExit(f"KERAS_SL_TEST_JOBS must be a whole number such as 1 or 2, not {value!r}") from None
    return max(1, jobs)


def _has_xdist() -> bool:
    return importlib.util.find_spec("xdist") is not None


def _pytest_command(backend: str, argv: list[str], tmp_root: Path, jobs: int = 1) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv]
    user_chose_workers = any(a == "-n" or a.startswith(("-n=", "--numprocesses")) or a == "no:xdist" for a in argv)
    if jobs > 1 and not user_chose_workers:
        command += ["-n", str(jobs), "--dist", "worksteal"]
    if not any(a == "--basetemp" or a.startswith("--basetemp=") for a in argv):
        # Each backend gets its own temporary root (xdist gives each worker a folder inside it).
        command.append(f"--basetemp={tmp_root / backend}")
    return command


def main(argv: list[str]) -> int:
    backends = os.environ.get("KERAS_SL_BACKENDS", "tensorflow,jax,torch").split(",")
    jobs = _jobs()
    if jobs > 1 and not _has_xdist():
        print("pytest-xdist is not installed (pip install pytest-xdist, or the test extra): "
              "one process per backend", flush=True)
        jobs = 1
    totals = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    failed = []
    suite_start = time.time()
    print(f"backends: {', '.join(backends)}; {jobs} worker(s) each", flush=True)
    with tempfile.TemporaryDirectory(prefix="keras_sl_tests_") as tmp:
        tmp_root = Path(tmp)
        for backend in backends:
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
            print(f"\n===== KERAS_BACKEND={backend} =====", flush=True)
            start = time.time()
            proc = subprocess.Popen(_pytest_command(backend, argv, tmp_root, jobs), cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            lines = []
            for line in proc.stdout:
                print(line, end="", flush=True)
                lines.append(line)
            proc.wait()
            print(f"[{backend}] exit code {proc.returncode} in {time.time() - start:.0f} s", flush=True)
            summary = next((ln for ln in reversed(lines) if ln.strip()), "")
            for count, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", summary):
                totals[kind] += int(count)
            if proc.returncode != 0:
                failed.append(backend)
    print(f"\nbackends: {', '.join(backends)}; failing: {', '.join(failed) or 'none'}; "
          f"{time.time() - suite_start:.0f} s in all")
    line = f"{totals['passed']} passed, {totals['failed'] + totals['error']} failed, {totals['skipped']} skipped"
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
