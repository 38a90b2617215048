"""Every ``KERAS_SL_*`` environment variable, read here and nowhere else.

Each accessor reads the environment when it is called (so a test can
``monkeypatch.setenv`` and a long-lived process sees a change) and returns a
typed value; a value it cannot read raises a ``ValueError`` naming the
variable. :data:`VARIABLES` is the table the documentation renders
(``docs/configuration.md`` is :func:`markdown_table`'s output).

Example:
>>> import os
>>> from keras_sl import config
>>> os.environ["KERAS_SL_XLA_FUSION"] = "0"
>>> config.xla_fusion()
False
>>> del os.environ["KERAS_SL_XLA_FUSION"]
>>> config.xla_fusion()
True
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Variable:
    """One environment variable: its name, default, meaning and what reads it."""

    name: str
    default: str
    meaning: str
    used_by: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "KERAS_SL_CACHE", "~/.cache/keras_sl",
        "Folder for presets downloaded from a URL (kept in its `presets/` subfolder).",
        "presets",
    ),
    Variable(
        "KERAS_SL_MALLOC_TUNING", "unset",
        "Process tuning for CPU runs (glibc `mallopt` thresholds on torch and JAX; on JAX also CPU "
        "computations in the calling thread), applied when the first keras_sl model is built, compiled "
        "or run, or by `keras_sl.fast.runtime.tune_process()`. Unset: tune and print one line on stderr "
        "saying so; `1`: tune without the line; `0`: leave the process alone.",
        "process tuning (`keras_sl.fast.runtime`)",
    ),
    Variable(
        "KERAS_SL_XLA_FUSION", "1",
        "`0`: TensorFlow runs instance norm (+ PReLU) as separate ops instead of one XLA-compiled "
        "kernel on the CPU (exports turn it off themselves).",
        "instance norm on TensorFlow",
    ),
    Variable(
        "KERAS_SL_XLA_CPU_LIBRARY_FUSIONS", "0",
        "`1`: JAX steps of keras_sl models keep XLA's CPU library (YNNPACK) fusions, which keras_sl "
        "turns off per compilation because they run its reductions slower.",
        "JAX step compilation",
    ),
    Variable(
        "KERAS_SL_TORCH_GRAPH", "export",
        "torch inference path of models compiled with `jit_compile=\"auto\"` or not compiled: `export` "
        "(replay a captured torch.export graph), `inductor` (compile that graph) or `eager`.",
        "torch inference",
    ),
    Variable(
        "KERAS_SL_TEST_JOBS", "2",
        "Development only: pytest-xdist workers per backend in `tests/run_backends.py` (`1`: one process per backend).",
        "`tests/run_backends.py`",
    ),
    Variable(
        "KERAS_SL_BACKENDS", "tensorflow,jax,torch",
        "Development only: comma-separated backends `tests/run_backends.py` runs.",
        "`tests/run_backends.py`",
    ),
)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
TORCH_GRAPH_MODES = ("eager", "export", "inductor")


def _raw(name: str) -> str | None:
    """The variable's value, stripped; None when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None


def _flag(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not a switch; use 1 or 0.")


def cache_dir() -> Path:
    """``KERAS_SL_CACHE``: keras_sl's cache folder (``~/.cache/keras_sl`` by default)."""
    value = _raw("KERAS_SL_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "keras_sl"


def malloc_tuning() -> bool:
    """``KERAS_SL_MALLOC_TUNING``: whether keras_sl may tune the process (default True)."""
    return _flag("KERAS_SL_MALLOC_TUNING", True)


def malloc_tuning_explicit() -> bool:
    """Whether ``KERAS_SL_MALLOC_TUNING`` is set at all (an explicit choice
    needs no report line)."""
    return _raw("KERAS_SL_MALLOC_TUNING") is not None


def xla_fusion() -> bool:
    """``KERAS_SL_XLA_FUSION``: XLA-fused instance norm on TensorFlow-CPU (default True)."""
    return _flag("KERAS_SL_XLA_FUSION", True)


def xla_cpu_library_fusions() -> bool:
    """``KERAS_SL_XLA_CPU_LIBRARY_FUSIONS``: keep XLA's CPU library fusions (default False)."""
    return _flag("KERAS_SL_XLA_CPU_LIBRARY_FUSIONS", False)


def torch_graph() -> str:
    """``KERAS_SL_TORCH_GRAPH``: the torch inference graph mode (default ``"export"``)."""
    value = (_raw("KERAS_SL_TORCH_GRAPH") or "export").lower()
    if value not in TORCH_GRAPH_MODES:
        raise ValueError(
            f"KERAS_SL_TORCH_GRAPH={value!r} is not a torch inference graph mode; use one of {TORCH_GRAPH_MODES}."
        )
    return value


def markdown_table() -> str:
    """:data:`VARIABLES` as a Markdown table (``docs/configuration.md``)."""
    lines = ["| variable | default | meaning | used by |", "| --- | --- | --- | --- |"]
    for var in VARIABLES:
        lines.append(f"| `{var.name}` | `{var.default}` | {var.meaning} | {var.used_by} |")
    return "\n".join(lines)
