"""Run the test suite once per Keras backend; fail if any backend fails.

Usage: ``python tests/run_backends.py [pytest args...]``. Backends run one
after another (each in a fresh process, since Keras picks its backend at
import). Set ``KERAS_SL_BACKENDS=torch,jax`` to run a subset.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    backends = os.environ.get("KERAS_SL_BACKENDS", "tensorflow,jax,torch").split(",")
    totals = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    failed = []
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        print(f"\n===== KERAS_BACKEND={backend} =====", flush=True)
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        print(proc.stdout, flush=True)
        print(f"[{backend}] exit code {proc.returncode} in {time.time() - start:.0f} s", flush=True)
        summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        for count, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", summary):
            totals[kind] += int(count)
        if proc.returncode != 0:
            failed.append(backend)
    print(f"\nbackends: {', '.join(backends)}; failing: {', '.join(failed) or 'none'}")
    line = f"{totals['passed']} passed, {totals['failed'] + totals['error']} failed, {totals['skipped']} skipped"
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
