"""Run the test suite once per Keras backend; fail if any backend fails.

Usage: ``python tests/run_backends.py [pytest args...]``. Each backend runs in
a fresh process (Keras picks its backend at import). Two backends run at a
time by default: most of the suite is single-threaded tracing and compiling,
so on a 2-core machine two processes finish the three backends in about
two thirds of the time one after another takes. ``KERAS_SL_TEST_JOBS=1`` runs
them one after another; ``KERAS_SL_BACKENDS=torch,jax`` runs a subset. Each
backend's output is printed, whole, when it finishes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _jobs(n_backends: int) -> int:
    value = os.environ.get("KERAS_SL_TEST_JOBS", "2")
    try:
        jobs = int(value)
    except ValueError:
        raise SystemExit(f"KERAS_SL_TEST_JOBS must be a whole number such as 1 or 2, not {value!r}") from None
    return max(1, min(jobs, n_backends))


def _pytest_command(backend: str, argv: list[str], tmp_root: Path) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv]
    if not any(a == "--basetemp" or a.startswith("--basetemp=") for a in argv):
        # Concurrent pytest processes must not share (and prune) one temporary root.
        command.append(f"--basetemp={tmp_root / backend}")
    return command


def main(argv: list[str]) -> int:
    backends = os.environ.get("KERAS_SL_BACKENDS", "tensorflow,jax,torch").split(",")
    jobs = _jobs(len(backends))
    totals = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    failed = []
    pending = list(backends)
    running: dict[str, tuple[subprocess.Popen, object, float]] = {}
    suite_start = time.time()
    print(f"backends: {', '.join(backends)}; {jobs} at a time", flush=True)
    with tempfile.TemporaryDirectory(prefix="keras_sl_tests_") as tmp:
        tmp_root = Path(tmp)
        while pending or running:
            while pending and len(running) < jobs:
                backend = pending.pop(0)
                env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
                log = open(tmp_root / f"{backend}.log", "w+")
                proc = subprocess.Popen(_pytest_command(backend, argv, tmp_root), cwd=ROOT, env=env,
                                        stdout=log, stderr=subprocess.STDOUT, text=True)
                running[backend] = (proc, log, time.time())
                print(f"[{backend}] started", flush=True)
            time.sleep(0.5)
            for backend, (proc, log, start) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[backend]
                log.seek(0)
                output = log.read()
                log.close()
                print(f"\n===== KERAS_BACKEND={backend} =====", flush=True)
                print(output, flush=True)
                print(f"[{backend}] exit code {proc.returncode} in {time.time() - start:.0f} s", flush=True)
                summary = output.strip().splitlines()[-1] if output.strip() else ""
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
