"""Inference and training speed of SL-UNet and UNet under the current backend.

``run_benchmark`` builds each requested model with a fixed input shape, times
the compiled predict (``infer``) or train (``train``) step on one random batch,
and relates the speed to a float32 matmul peak measured in the same process
with the backend's own ``keras.ops.matmul``. ``keras-sl bench`` is the command
line front end; ``benchmarks/run_all.py`` runs it once per backend.

Conventions (also written into the result's ``"conventions"`` entry):

* Times are wall-clock seconds of one ``predict_on_batch`` /
  ``train_on_batch`` call, which returns host (NumPy) values, so every call
  includes device synchronisation. ``warmup_s`` is the first call (tracing,
  compilation, first run); it is followed by further untimed warm-up calls,
  then ``repeats`` timed calls; ``median_s`` is their median.
* Models are :mod:`keras_sl.registry` names. Inference times the graph
  behind a task's ``predict`` without the NumPy pre- and post-processing
  (``model._inference_model("prediction")``): for SL-UNet lift, 3-D UNet
  and slice head; for the UNet the 2-D network and its sigmoid.
* FLOPs are 2 x the MACs of :func:`keras_sl.profile` (thop's counting rules)
  x batch; a training step counts 3 x the forward FLOPs (forward + backward
  for activations and weights). Optimizer and loss FLOPs are not counted.
* ``page_faults`` is the median number of minor page faults of one timed
  call (``getrusage``): thousands mean the allocator hands the backend
  freshly mapped buffers on every call (see :mod:`keras_sl.fast.runtime`).
* ``pairs`` (``paired_rounds > 0``): an SL model and its 2-D twin (the
  registry's ``twin``, e.g. ``unet_5l1r`` for ``sl_unet_5l1r``) in one process, both warmed up, then their calls
  interleaved (A B, B A, ...); the median of the per-round SL / UNet ratios
  is robust to a machine whose speed drifts between minutes, which a ratio
  of two medians measured apart is not.
* Memory: ``peak_rss_mib`` is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
  after the run (the process's resident-set high-water mark, MiB): it is
  cumulative over the process so far (earlier models and the matmul
  included), an upper bound for each row. On Linux ``rss_hwm_mib`` adds a
  per-row figure: the kernel's high-water mark (``VmHWM``) is reset through
  ``/proc/self/clear_refs`` before each model and read after it, so it
  covers that model's run on top of what the process already held
  (framework, allocator caches); ``None`` where the reset is unavailable.
  ``device_memory`` adds torch/JAX/TensorFlow accelerator statistics when an
  accelerator is in use (``None`` on CPU).
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import resource
import statistics
import sys
import time
from typing import Iterable

import keras
import numpy as np

MODES = ("infer", "train")

CONVENTIONS = {
    "time": "wall-clock seconds per predict_on_batch/train_on_batch call on one batch (host values returned, so "
            "device work is synchronised); median_s = median of `repeats` calls after warm-up; warmup_s = first "
            "call (trace/compile + run). SL-UNet inference = lift + 3-D UNet + slice head (SLUNet.predict graph). "
            "torch inference: inference_graph = eager|export|inductor (keras_sl.models.inference_graph); the graph "
            "is captured during warm-up (at least 2 calls) and graph_capture_s is its capture + compile time.",
    "gflops": "2 x MACs (keras_sl.profile, thop rules) x batch / 1e9 for infer; 3 x that for train "
              "(forward + backward); optimizer and loss not counted",
    "achieved_gflops": "gflops / median_s",
    "page_faults": "median over the timed calls of the process's minor page faults during one call "
                   "(getrusage ru_minflt; page_faults_per_call lists them): buffers mapped fresh and touched "
                   "on every call instead of being reused from the allocator's heap",
    "peak_fraction": "achieved_gflops / matmul_gflops (float32 keras.ops.matmul peak measured in the same process)",
    "peak_rss_mib": "resource.getrusage(RUSAGE_SELF).ru_maxrss after the model's run, MiB: process-wide "
                    "high-water mark so far (earlier rows and the matmul included), an upper bound per row",
    "rss_hwm_mib": "Linux VmHWM (MiB) reset via /proc/self/clear_refs before this row and read after it: the "
                   "row's peak resident set including the process baseline (framework, allocator caches); "
                   "null where the reset is unavailable",
    "pairs": "SL-UNet vs the UNet of the same levels/res units in one process, both warmed up, then `rounds` "
             "calls of each interleaved (A B, B A, ...); ratios = per-round SL / UNet seconds, ratio_median their "
             "median, ratio_quartiles the 25th/75th percentiles",
    "device_memory": "peak accelerator bytes (torch.cuda.max_memory_allocated, JAX memory_stats "
                     "peak_bytes_in_use, tf.config.experimental.get_memory_info peak); null on CPU",
}


def parse_variant(variant: str) -> tuple[str, str]:
    """``"lifted_last:banded"`` -> ``("lifted_last", "banded")`` (SL execution path)."""
    from keras_sl.backend_defaults import BACKBONE_LAYOUTS
    from keras_sl.layers.convolution import STRATEGIES

    layout, _, strategy = variant.partition(":")
    strategy = strategy or "auto"
    if layout not in BACKBONE_LAYOUTS or strategy not in STRATEGIES:
        raise ValueError(
            f"SL variant {variant!r} must be LAYOUT:STRATEGY with LAYOUT in {BACKBONE_LAYOUTS} "
            f"and STRATEGY in {STRATEGIES}, e.g. 'lifted_last:banded'."
        )
    return layout, strategy


def build_benchmark_model(
    name: str,
    resolution: int,
    in_channels: int = 3,
    backbone_layout: str = "auto",
    conv_strategy: str = "auto",
) -> keras.Model:
    """The registry's model ``name`` with a fixed input shape (``backbone_layout``
    / ``conv_strategy``, when not ``"auto"``, choose an SL-UNet's execution path)."""
    spec = _spec(name, resolution)
    kwargs = {"in_channels": in_channels, "input_shape": (resolution, resolution, in_channels)}
    if (backbone_layout, conv_strategy) != ("auto", "auto"):
        kwargs.update(backbone_layout=backbone_layout, conv_strategy=conv_strategy)
    return spec.build(**kwargs)


def _spec(name: str, resolution: int):
    """The registry spec of ``name``, checked against ``resolution``."""
    from keras_sl import registry

    spec = registry.parse(name)
    if resolution % spec.input_multiple:
        raise ValueError(f"{name} needs a resolution that is a multiple of {spec.input_multiple}, got {resolution}.")
    return spec


# -- measurements ----------------------------------------------------------------
def _sync(x):
    return keras.ops.convert_to_numpy(x)


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Median float32 GFLOP/s of ``keras.ops.matmul`` on two ``size x size`` matrices."""
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.standard_normal((size, size), dtype=np.float32))
    b = keras.ops.convert_to_tensor(rng.standard_normal((size, size), dtype=np.float32))
    _sync(keras.ops.matmul(a, b))  # warm-up (kernel selection, thread pools)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        _sync(keras.ops.matmul(a, b))
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times) / 1e9


def _reset_rss_peak() -> bool:
    """Reset the process's resident-set high-water mark (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_hwm_mib() -> float | None:
    """``VmHWM`` of /proc/self/status in MiB (None where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def max_rss_mib() -> float:
    """``getrusage`` maximum resident set size of this process in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _reset_device_peak() -> None:
    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_logical_devices("GPU"):
                tf.config.experimental.reset_memory_stats("GPU:0")
    except Exception:  # statistics are best effort
        pass


def device_memory() -> dict | None:
    """Peak accelerator memory in MiB, or None when running on CPU only."""
    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return {"device": torch.cuda.get_device_name(),
                        "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                        "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20}
        elif backend == "jax":
            import jax

            dev = jax.devices()[0]
            stats = dev.memory_stats() if dev.platform != "cpu" else None
            if stats:
                return {"device": str(dev), "peak_bytes_in_use_mib": stats.get("peak_bytes_in_use", 0) / 2**20,
                        "bytes_in_use_mib": stats.get("bytes_in_use", 0) / 2**20}
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_logical_devices("GPU"):
                info = tf.config.experimental.get_memory_info("GPU:0")
                return {"device": "GPU:0", "peak_mib": info["peak"] / 2**20, "current_mib": info["current"] / 2**20}
    except Exception:
        return None
    return None


def machine_info() -> dict:
    """CPU, platform, Python, Keras and backend versions, date (UTC)."""
    backend = keras.backend.backend()
    info = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "keras": keras.__version__,
        "backend": backend,
        "backend_version": _backend_version(backend),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = [round(v, 2) for v in os.getloadavg()]
    if backend == "torch":
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["accelerator"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    elif backend == "jax":
        import jax

        info["accelerator"] = None if jax.devices()[0].platform == "cpu" else str(jax.devices()[0])
        info["jaxlib"] = _version("jaxlib")
        from keras_sl.models.xla_compile_options import xla_cpu_compiler_options

        info["xla_compiler_options"] = xla_cpu_compiler_options()  # what keras_sl models' steps compile with
        info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        info["accelerator"] = gpus[0].name if gpus else None
    return info


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _backend_version(backend: str) -> str | None:
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module is None:
        return None
    try:
        return __import__(module).__version__
    except Exception:
        return _version(module)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# -- timing ------------------------------------------------------------------------
def _minor_faults() -> int:
    """The process's minor page faults so far (``getrusage``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time_calls(fn, repeats: int, warmup: int) -> tuple[float, list[float], list[int]]:
    """``(first call s, timed call seconds, minor page faults per timed call)``."""
    start = time.perf_counter()
    fn()
    warmup_s = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        fn()
    times, faults = [], []
    for _ in range(repeats):
        faults_before = _minor_faults()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        faults.append(_minor_faults() - faults_before)
    return warmup_s, times, faults


def _compile_for_training(model, jit_compile="auto") -> None:
    from keras_sl import losses
    from keras_sl.metrics import Dice
    from keras_sl.tasks import Task

    if isinstance(model, Task):
        model.compile(jit_compile=jit_compile)  # the paper's defaults (Table V) and backend defaults
        return
    # keras_sl.training's setup for a bare network.
    optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-2, clipvalue=0.5)
    model.compile(optimizer=optimizer, loss=losses.StructureLoss(), metrics=[Dice(from_logits=True)],
                  jit_compile=jit_compile)


def _step(name, mode, resolution, x, y, variant=("auto", "auto"), jit_compile="auto", warmup=1):
    """``(model, runner, fn, warmup)``: the compiled step ``fn()`` that one row times
    (``runner`` is the inference model, None for ``train``), and the warm-up
    calls it needs (a torch inference graph is captured during warm-up)."""
    from keras_sl.models.inference_graph import CAPTURE_AFTER_CALLS

    model = build_benchmark_model(name, resolution, backbone_layout=variant[0], conv_strategy=variant[1])
    if mode == "infer":
        runner = model._inference_model("prediction") if hasattr(model, "_inference_model") else model
        runner.compile(jit_compile=jit_compile)
        if runner.inference_graphs is not None:  # capture the torch graph before timing
            warmup = max(warmup, CAPTURE_AFTER_CALLS)
        return model, runner, (lambda: runner.predict_on_batch(x)), warmup
    if mode == "train":
        _compile_for_training(model, jit_compile)
        return model, None, (lambda: model.train_on_batch(x, y)), warmup
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")


def _bench_one(name, mode, resolution, batch, repeats, warmup, x, y, forward_gflop,
               variant=("auto", "auto"), jit_compile="auto"):
    model, runner, fn, warmup = _step(name, mode, resolution, x, y, variant, jit_compile, warmup)
    gflops = forward_gflop * batch * (3 if mode == "train" else 1)
    warmup_s, times, faults = _time_calls(fn, repeats, warmup)
    median = statistics.median(times)
    graph_info = {}
    if mode == "infer" and runner.inference_graph_mode is not None:
        graphs = runner.inference_graphs
        graph_info = {"inference_graph": runner.inference_graph_mode,
                      "graph_capture_s": sum(graphs.capture_seconds.values()) if graphs else 0.0}
    if hasattr(model, "resolved_backbone_layout"):  # an SL-UNet
        strategies = sorted({layer.resolved_strategy for layer in _convolutions(model)})
        variant_info = {"variant": f"{variant[0]}:{variant[1]}", "backbone_layout": model.resolved_backbone_layout,
                        "conv_strategy": "+".join(strategies)}
    else:
        variant_info = {"variant": "-", "backbone_layout": "-", "conv_strategy": "native"}
    return {
        "backend": keras.backend.backend(), "model": name, "mode": mode, **variant_info,
        "jit_compile": str(jit_compile), **graph_info, "dtype_policy": keras.config.dtype_policy().name,
        "resolution": resolution, "batch": batch,
        "median_s": median, "times_s": times, "warmup_s": warmup_s, "gflops": gflops,
        "page_faults": int(statistics.median(faults)), "page_faults_per_call": faults,
        "achieved_gflops": gflops / median if median > 0 else float("nan"),
    }


def _time_interleaved(fns, rounds: int, warmup: int) -> list[list[float]]:
    """Seconds of ``rounds`` calls of each function in ``fns``, the calls interleaved.

    Every function is warmed up first (``warmup`` calls each); then each round
    calls every function once, in an order that alternates between rounds
    (A B, B A, ...), so that a slow minute of the machine slows both alike.
    """
    for fn in fns:
        for _ in range(max(1, warmup)):
            fn()
    times = [[] for _ in fns]
    for i in range(rounds):
        order = range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            start = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - start)
    return times


def sl_twin_pairs(models: Iterable[str]) -> list[tuple[str, str]]:
    """``(SL model, its 2-D twin)`` for each SL model of ``models`` whose twin
    (:mod:`keras_sl.registry`) is in ``models`` too."""
    from keras_sl import registry

    models = list(models)
    specs = [registry.parse(name) for name in models]
    return [(s.name, s.twin) for s in specs if s.lifted and s.twin in models]


def _bench_pair(pair, mode, resolution, batch, rounds, warmup, x, y, jit_compile="auto", seed=0):
    """An SL model vs its 2-D twin, their calls interleaved in one process."""
    from keras_sl import registry

    fns = []  # each step keeps its model alive: both models exist for the whole measurement
    for name in pair:
        keras.utils.set_random_seed(seed)
        _, _, fn, needed = _step(name, mode, resolution, x, y, jit_compile=jit_compile, warmup=warmup)
        warmup = max(warmup, needed)
        fns.append(fn)
    sl_times, unet_times = _time_interleaved(fns, rounds, warmup)
    ratios = [a / b for a, b in zip(sl_times, unet_times)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return {
        "backend": keras.backend.backend(), "config": registry.parse(pair[0]).variant,
        "sl_model": pair[0], "twin_model": pair[1], "mode": mode, "jit_compile": str(jit_compile),
        "resolution": resolution, "batch": batch, "rounds": rounds,
        "sl_times_s": sl_times, "unet_times_s": unet_times,
        "sl_median_s": statistics.median(sl_times), "unet_median_s": statistics.median(unet_times),
        "ratios": ratios, "ratio_median": statistics.median(ratios), "ratio_quartiles": [q1, q3],
    }


def _convolutions(model):
    from keras_sl.layers.convolution import Convolution

    return [layer for layer in model._flatten_layers() if isinstance(layer, Convolution)]


def _modes(mode: str) -> tuple[str, ...]:
    if mode == "both":
        return MODES
    if mode not in MODES:
        raise ValueError(f"mode must be 'infer', 'train' or 'both', got {mode!r}.")
    return (mode,)


def run_benchmark(
    models: Iterable[str] | str,
    resolution: int = 256,
    batch: int = 4,
    mode: str = "both",
    repeats: int = 7,
    warmup: int = 2,
    seed: int = 0,
    matmul_size: int = 2048,
    matmul_repeats: int = 5,
    progress=None,
    sl_variants: Iterable[str] | str = ("auto:auto",),
    jit_compile="auto",
    dtype_policy: str | None = None,
    paired_rounds: int = 0,
) -> dict:
    """Time ``models`` (:mod:`keras_sl.registry` names) under the current backend.

    Args:
        models: model names, or one comma-separated string.
        resolution: square input size (a multiple of the model's stride:
            16 for 5 levels, 128 for 8 levels).
        batch: images per step.
        mode: ``"infer"``, ``"train"`` or ``"both"``.
        repeats: timed calls per model and mode.
        warmup: untimed calls before timing (at least 1; the first is ``warmup_s``).
        seed: seed of the random images, masks and weights.
        matmul_size: side of the square float32 matmul that measures the peak.
        matmul_repeats: timed matmuls (median taken).
        progress: optional callable receiving each result row as it completes.
        sl_variants: SL execution paths to time, each ``"LAYOUT:STRATEGY"``
            (``SLUNet(backbone_layout=..., conv_strategy=...)``); UNet rows run once.
        jit_compile: passed to ``compile`` (``"auto"``: XLA on JAX, and on
            torch inference replays a captured ``torch.export`` graph;
            ``True`` on torch compiles that graph with inductor, see
            :mod:`keras_sl.models.inference_graph`; its capture and compile
            time is ``graph_capture_s``, not part of ``warmup_s``).
        dtype_policy: Keras dtype policy for the run, e.g. ``"mixed_bfloat16"``.
        paired_rounds: when > 0, each SL model named with its 2-D twin (e.g.
            ``sl_unet_5l1r`` and ``unet_5l1r``) is also timed against it with
            the two models' calls interleaved, this many calls each (default
            execution path; rows in ``"pairs"``).

    Returns:
        ``{"machine", "matmul_gflops", "matmul_size", "conventions", "results",
        "pairs"}``;
        each result row has ``backend, model, mode, resolution, batch,
        median_s, times_s, warmup_s, gflops, achieved_gflops, peak_fraction,
        page_faults, page_faults_per_call, peak_rss_mib, rss_hwm_mib,
        device_memory`` (see the module docstring). Each ``pairs`` row has
        ``config, sl_model, twin_model, mode, rounds, sl_times_s, unet_times_s, sl_median_s,
        unet_median_s, ratios`` (per round, SL / UNet), ``ratio_median`` and
        ``ratio_quartiles``.
    """
    from keras_sl.fast import runtime
    from keras_sl.profiler import profile

    if isinstance(models, str):
        models = [m for m in models.split(",") if m.strip()]
    models = [m.strip() for m in models]
    for name in models:
        _spec(name, resolution)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}.")
    modes = _modes(mode)
    if isinstance(sl_variants, str):
        sl_variants = [v for v in sl_variants.split(",") if v.strip()]
    variants = [parse_variant(v.strip()) for v in sl_variants] or [("auto", "auto")]
    if dtype_policy:
        keras.config.set_dtype_policy(dtype_policy)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    if paired_rounds < 0:
        raise ValueError(f"paired_rounds must be >= 0 (0: no interleaved pairs), got {paired_rounds}.")
    warmup = max(1, int(warmup))
    # The process tuning keras_sl models apply on first use, up front (before
    # machine_info starts JAX) so that every model and mode is timed alike.
    tuning = runtime.tune_process()
    machine = machine_info()
    machine["malloc_tuned"] = tuning["malloc"]
    machine["process_tuning"] = tuning

    peak = matmul_peak_gflops(matmul_size, matmul_repeats)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, resolution, resolution, 3), dtype=np.float32)
    y = (rng.random((batch, resolution, resolution, 1)) > 0.5).astype(np.float32)

    results = []
    for name in models:
        forward_gflop = 2 * profile(build_benchmark_model(name, resolution), (resolution, resolution, 3))["macs"] / 1e9
        model_variants = variants if _spec(name, resolution).lifted else [("auto", "auto")]
        for m, variant in ((m, v) for v in model_variants for m in modes):
            keras.backend.clear_session()
            gc.collect()
            keras.utils.set_random_seed(seed)
            rss_reset = _reset_rss_peak()
            _reset_device_peak()
            row = _bench_one(name, m, resolution, batch, repeats, warmup, x, y, forward_gflop,
                             variant=variant, jit_compile=jit_compile)
            gc.collect()
            row["peak_fraction"] = row["achieved_gflops"] / peak if peak > 0 else float("nan")
            row["peak_rss_mib"] = max_rss_mib()
            row["rss_hwm_mib"] = _rss_hwm_mib() if rss_reset else None
            row["device_memory"] = device_memory()
            results.append(row)
            if progress is not None:
                progress(row)
    pairs = []
    for twins in (sl_twin_pairs(models) if paired_rounds else []):
        for m in modes:
            keras.backend.clear_session()
            gc.collect()
            pair = _bench_pair(twins, m, resolution, batch, paired_rounds, warmup, x, y,
                               jit_compile=jit_compile, seed=seed)
            gc.collect()
            pairs.append(pair)
            if progress is not None:
                progress(pair)
    if hasattr(os, "getloadavg"):
        machine["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    return {
        "machine": machine,
        "backend": keras.backend.backend(),
        "matmul_gflops": peak,
        "matmul_size": matmul_size,
        "settings": {"models": models, "resolution": resolution, "batch": batch, "mode": mode,
                     "repeats": repeats, "warmup": warmup, "seed": seed,
                     "sl_variants": [f"{a}:{b}" for a, b in variants], "jit_compile": str(jit_compile),
                     "dtype_policy": keras.config.dtype_policy().name, "paired_rounds": paired_rounds},
        "conventions": CONVENTIONS,
        "results": results,
        "pairs": pairs,
    }


def format_results(report: dict) -> str:
    """Readable table of :func:`run_benchmark`'s output."""
    m = report["machine"]
    lines = [
        f"backend {m['backend']} {m.get('backend_version') or ''} | keras {m['keras']} | python {m['python']} | "
        f"{m['cpu_count']} CPU(s) {m.get('cpu_model') or ''}".rstrip(),
        f"matmul peak (float32, {report.get('matmul_size', '?')}^2): {report['matmul_gflops']:.1f} GFLOP/s",
        "GFLOP = 2 x MACs x batch (train: 3 x forward); faults = median minor page faults per timed call; "
        "RSS MiB = process max RSS so far (getrusage); row MiB = peak RSS during the row (VmHWM reset before it)",
        "",
        f"{'model':<14} {'variant':<28} {'mode':<6} {'res':>5} {'batch':>5} {'median s':>10} {'warmup s':>9} {'GFLOP':>9} "
        f"{'GFLOP/s':>9} {'% peak':>7} {'faults':>7} {'RSS MiB':>8} {'row MiB':>8}",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['model']:<14} {r.get('backbone_layout', '-') + '/' + r.get('conv_strategy', '-'):<28} "
            f"{r['mode']:<6} {r['resolution']:>5} {r['batch']:>5} {r['median_s']:>10.4f} "
            f"{r['warmup_s']:>9.2f} {r['gflops']:>9.3f} {r['achieved_gflops']:>9.2f} "
            f"{100 * r['peak_fraction']:>6.1f}% {r.get('page_faults', '-'):>7} {r['peak_rss_mib']:>8.0f} "
            f"{'-' if r.get('rss_hwm_mib') is None else format(r['rss_hwm_mib'], '.0f'):>8}"
        )
    if report.get("pairs"):
        lines += ["", "SL-UNet vs UNet, calls interleaved (A B, B A, ...): medians and per-round SL / UNet ratio",
                  f"{'config':<8} {'mode':<6} {'rounds':>6} {'SL s':>9} {'UNet s':>9} {'ratio':>7} {'quartiles':>13}"]
        for r in report["pairs"]:
            q1, q3 = r["ratio_quartiles"]
            lines.append(f"{r['config']:<8} {r['mode']:<6} {r['rounds']:>6} {r['sl_median_s']:>9.4f} "
                         f"{r['unet_median_s']:>9.4f} {r['ratio_median']:>7.3f} {q1:>6.3f}-{q3:.3f}")
    return "\n".join(lines)
