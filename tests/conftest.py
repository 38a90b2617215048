"""Shared fixtures for the keras_sl test suite (backend-agnostic)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite compiles thousands of small XLA programs, each once: skipping LLVM's expensive optimisation
# passes halves the JAX suite's CPU time. Code generation changes, semantics do not (float round-off at
# most). A user's own choice in XLA_FLAGS wins.
_QUICK_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_QUICK_COMPILE}".strip()

import importlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    # The process tuning keras_sl models apply on first use (keras_sl.fast.runtime),
    # up front: on JAX it only works before the first JAX computation of the process.
    from keras_sl.fast import runtime

    runtime.tune_process()


def optional_dependency_skip_reason(*modules: str) -> str | None:
    """Return why tests needing ``modules`` must be skipped, or None if all import."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # ImportError, or a broken install
            missing.append(f"{name} ({type(err).__name__}: {err})")
    if missing:
        return (
            "needs " + ", ".join(missing) + "; install them with "
            "`pip install torch && pip install --no-deps monai` to run MONAI parity tests"
        )
    return None


def monai_skip_reason() -> str | None:
    """Skip reason for tests that need MONAI (and therefore PyTorch)."""
    return optional_dependency_skip_reason("torch", "monai")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def monai_torch():
    """``(monai, torch)``, or skip the test with a clear reason."""
    reason = monai_skip_reason()
    if reason:
        pytest.skip(reason)
    import monai
    import torch

    return monai, torch
