"""One registry of execution paths, chosen per (op, backend, device).

A reference layer computes an op with ``keras.ops`` and hands the call to
:func:`run` with its reference function. :func:`run` looks up the paths
registered for the op, in registration order, and calls the first one that
*applies* to the arguments (it computes the same result for them) and
*pays* here (the current backend and device are among its ``backends`` and
``devices``, and its ``pays`` predicate, if any, holds); with none, the
reference runs. The choice is made when the op is called (traced, in graph
backends), never saved in a model's config.

``prefer`` lets a caller ask for one path wherever it applies (a layer's
explicit ``strategy="banded"``), or for the reference (:data:`REFERENCE`);
:func:`forced` does the same for every call of an op inside a block (parity
tests, A/B timing, exporters).

Example:
>>> @register("demo_double", "by_addition", applies=lambda x: x >= 0)
... def _add(x):
...     return x + x
>>> run("demo_double", lambda x: 2 * x, 3), run("demo_double", lambda x: 2 * x, -3)
(6, -6)
>>> with forced("demo_double", REFERENCE), recording() as used:
...     _ = run("demo_double", lambda x: 2 * x, 3)
>>> used
[('demo_double', 'reference')]
>>> unregister("demo_double")
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
from typing import Any, Callable, Iterator, Sequence

import keras

#: ``prefer``/:func:`forced` value that skips every registered path.
REFERENCE = "reference"

# Modules that register paths, imported on first use (they import the layers,
# which import this module: importing them here would be circular).
PATH_MODULES = (
    "keras_sl.fast.native_layouts",
    "keras_sl.fast.grouped_convolutions",
    "keras_sl.fast.transposed_by_phases",
    "keras_sl.fast.banded_convolution",
    "keras_sl.fast.joint_convolution",
    "keras_sl.fast.conv_by_taps",
    "keras_sl.fast.lifted_sum",
    "keras_sl.fast.fused_norm",
    "keras_sl.fast.torch_kernels",
    "keras_sl.fast.tflite_forms",
    "keras_sl.fast.loss_sums",
)


@dataclasses.dataclass(frozen=True)
class Path:
    """An execution path of ``op``: ``fn`` takes the reference's arguments.

    ``backends``/``devices``: where it is chosen automatically (None: all;
    devices are ``"cpu"``, ``"gpu"``, ``"tpu"``). ``applies(*args, **kwargs)``:
    whether it computes this call exactly (checked wherever it runs).
    ``pays(*args, **kwargs)``: a further cost rule for automatic choice.
    ``summary``: what it does and what it gained, for the docs.
    """

    op: str
    name: str
    fn: Callable
    backends: tuple[str, ...] | None = None
    devices: tuple[str, ...] | None = None
    applies: Callable[..., bool] | None = None
    pays: Callable[..., bool] | None = None
    summary: str = ""

    def runs_on(self, backend: str, device: str) -> bool:
        return (self.backends is None or backend in self.backends) and (
            self.devices is None or device in self.devices
        )


_PATHS: dict[str, list[Path]] = {}
_FORCED: dict[str, str] = {}
_RECORDS: list[list] = []
_LOADED = [False]


def register(op: str, name: str, *, backends: Sequence[str] | None = None, devices: Sequence[str] | None = None,
             applies: Callable[..., bool] | None = None, pays: Callable[..., bool] | None = None,
             summary: str = "") -> Callable:
    """Decorator: register the function as path ``name`` of ``op`` (after
    the op's earlier paths; a name registered again replaces its entry)."""
    if name == REFERENCE:
        raise ValueError(f"{REFERENCE!r} names the reference, not a path.")

    def decorator(fn: Callable) -> Callable:
        path = Path(op, name, fn, None if backends is None else tuple(backends),
                    None if devices is None else tuple(devices), applies, pays, summary or (fn.__doc__ or ""))
        entries = _PATHS.setdefault(op, [])
        for i, entry in enumerate(entries):
            if entry.name == name:
                entries[i] = path
                break
        else:
            entries.append(path)
        _candidates.cache_clear()
        return fn

    return decorator


def unregister(op: str, name: str | None = None) -> None:
    """Remove path ``name`` of ``op`` (every path of ``op`` when None)."""
    if name is None:
        _PATHS.pop(op, None)
    else:
        _PATHS[op] = [p for p in _PATHS.get(op, []) if p.name != name]
    _candidates.cache_clear()


def _load() -> None:
    if not _LOADED[0]:
        _LOADED[0] = True
        for module in PATH_MODULES:
            importlib.import_module(module)


@functools.lru_cache(maxsize=None)
def device() -> str:
    """``"cpu"``, ``"gpu"`` or ``"tpu"``: where the current backend computes."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


@functools.lru_cache(maxsize=None)
def _candidates(op: str, backend: str) -> tuple[Path, ...]:
    here = device()
    return tuple(p for p in _PATHS.get(op, ()) if p.runs_on(backend, here))


def paths(op: str | None = None) -> list[Path]:
    """Registered paths (of ``op``, or all), in the order they are tried."""
    _load()
    if op is not None:
        return list(_PATHS.get(op, ()))
    return [p for entries in _PATHS.values() for p in entries]


def resolve(op: str, *args: Any, prefer: str | None = None, **kwargs: Any) -> Path | None:
    """The path that computes this call of ``op``, or None for the reference."""
    _load()
    wanted = _FORCED.get(op, prefer)
    if wanted == REFERENCE:
        return None
    if op in _FORCED:  # only the forced path, wherever it applies
        entries = [p for p in _PATHS.get(op, ()) if p.name == wanted]
        return next((p for p in entries if p.applies is None or p.applies(*args, **kwargs)), None)
    for path in _PATHS.get(op, ()) if wanted else _candidates(op, keras.backend.backend()):
        if path.applies is not None and not path.applies(*args, **kwargs):
            continue
        if path.name == wanted:
            return path
        if wanted and not path.runs_on(keras.backend.backend(), device()):
            continue
        if path.pays is None or path.pays(*args, **kwargs):
            return path
    return None


def run(op: str, reference: Callable, *args: Any, prefer: str | None = None, **kwargs: Any) -> Any:
    """``reference(*args, **kwargs)``, or the registered path that computes it here."""
    path = resolve(op, *args, prefer=prefer, **kwargs)
    if _RECORDS:
        for record in _RECORDS:
            record.append((op, REFERENCE if path is None else path.name))
    return (reference if path is None else path.fn)(*args, **kwargs)


def state() -> tuple:
    """The :func:`forced` choices in effect (hashable): compiled functions
    that cache their traces take it as an argument, so they retrace when
    it changes."""
    return tuple(sorted(_FORCED.items()))


@contextlib.contextmanager
def forced(op: str, name: str) -> Iterator[None]:
    """Inside the block, every call of ``op`` runs path ``name`` where it
    applies (the reference elsewhere), or the reference (:data:`REFERENCE`)."""
    _load()
    if name != REFERENCE and name not in [p.name for p in _PATHS.get(op, ())]:
        raise ValueError(f"{op!r} has no path {name!r}; registered: {[p.name for p in _PATHS.get(op, ())]}.")
    previous = _FORCED.get(op)
    _FORCED[op] = name
    try:
        yield
    finally:
        if previous is None:
            _FORCED.pop(op, None)
        else:
            _FORCED[op] = previous


@contextlib.contextmanager
def recording() -> Iterator[list[tuple[str, str]]]:
    """Collect ``(op, path)`` for every :func:`run` inside the block
    (``"reference"`` where no path ran)."""
    record: list = []
    _RECORDS.append(record)
    try:
        yield record
    finally:
        _RECORDS.remove(record)


def channels_last_conv(fn):
    """Let a conv path written for channels-last data take channels-first
    data too (the channel axis moved in and back out)."""
    import functools

    from keras import ops

    @functools.wraps(fn)
    def wrapper(x, kernel, strides, dilation, groups, data_format):
        if data_format == "channels_first":
            y = fn(ops.moveaxis(x, 1, -1), kernel, strides, dilation, groups, "channels_last")
            return ops.moveaxis(y, -1, 1)
        return fn(x, kernel, strides, dilation, groups, data_format)

    return wrapper
