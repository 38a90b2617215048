"""Run ``keras-sl bench`` once per Keras backend and write benchmarks/README.md.

Usage::

    python benchmarks/run_all.py                      # 8 models, 256x256, batch 4, 3 backends
    python benchmarks/run_all.py --models sl_unet_5l1r,unet_5l1r --backends torch,jax
    python benchmarks/run_all.py --backends tensorflow,jax,torch,torch:true   # + torch inductor
    python benchmarks/run_all.py --report-only        # rebuild README.md from results/*.json

Each backend runs in its own process (Keras picks its backend at import),
one after another, writing ``results/<backend>.json``; the README's tables
are then built from those files by :func:`format_markdown`. A backend given as
``BACKEND:JIT`` runs with ``--jit-compile JIT`` instead of ``--jit-compile``'s
value (``torch:true``: inference through the inductor-compiled graph) and is
reported as its own column, ``results/<backend>-jit_<JIT>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ALL_MODELS = ("sl_unet_5l1r,sl_unet_5l2r,sl_unet_8l1r,sl_unet_8l2r,"
              "unet_5l1r,unet_5l2r,unet_8l1r,unet_8l2r")
BACKENDS = ("tensorflow", "jax", "torch")


# -- running -----------------------------------------------------------------------
def parse_run(spec: str, default_jit: str) -> tuple[str, str]:
    """``"torch:true"`` -> ``("torch", "true")``; ``"jax"`` -> ``("jax", default_jit)``."""
    backend, _, jit = spec.strip().partition(":")
    jit = jit or default_jit
    if backend not in BACKENDS or jit not in ("auto", "true", "false"):
        raise SystemExit(f"--backends entry {spec!r}: use BACKEND or BACKEND:JIT with BACKEND in {BACKENDS} "
                         "and JIT auto, true or false (e.g. torch:true).")
    return backend, jit


def results_name(backend: str, jit: str, default_jit: str) -> str:
    return f"{backend}.json" if jit == default_jit else f"{backend}-jit_{jit}.json"


def bench_command(args, json_path: Path, jit: str | None = None) -> list[str]:
    """``keras-sl bench ...`` with this interpreter's console script (or ``-m``)."""
    script = Path(sys.executable).parent / "keras-sl"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "keras_sl.cli"]
    return base + [
        "bench", "--models", args.models, "--resolution", str(args.resolution), "--batch", str(args.batch),
        "--mode", args.mode, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
        "--matmul-size", str(args.matmul_size), "--json", str(json_path),
        "--sl-variants", args.sl_variants, "--jit-compile", jit or args.jit_compile,
        "--paired", str(args.paired),
    ]


def run_backend(backend: str, args, results_dir: Path, jit: str | None = None) -> Path | None:
    """Run the benchmark under ``backend``; returns its JSON path, None on failure."""
    results_dir.mkdir(parents=True, exist_ok=True)
    jit = jit or args.jit_compile
    path = results_dir / results_name(backend, jit, args.jit_compile)
    cmd = bench_command(args, path, jit)
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(f"\n===== KERAS_BACKEND={backend}: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    proc = subprocess.run(cmd, env=env, cwd=ROOT)
    if proc.returncode != 0:
        print(f"[{backend}] failed with exit code {proc.returncode}", flush=True)
        return None
    return path


# -- report ------------------------------------------------------------------------
def load_reports(paths) -> list[dict]:
    """The JSON reports of ``keras-sl bench`` (missing files are skipped)."""
    reports = []
    for p in paths:
        p = Path(p)
        if p.exists():
            reports.append(json.loads(p.read_text()))
    return reports


def _raw_backend(report: dict) -> str:
    return report.get("backend") or report["machine"]["backend"]


def _backend(report: dict) -> str:
    """The report's column label: the backend, plus its jit_compile unless "auto"."""
    backend = _raw_backend(report)
    jit = str(report.get("settings", {}).get("jit_compile", "auto")).lower()
    return backend if jit == "auto" else f"{backend} (jit_compile={jit})"


def _spec(model: str):
    """The keras_sl.registry entry of a model name (family, variant, twin); None if unregistered."""
    from keras_sl import registry

    return registry.parse(model) if model in registry.names() else None


def _fmt(value, spec: str = ".3f", missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return missing
    return format(value, spec)


def backend_ratios(rows: list[dict]) -> dict:
    """(backend, model, mode, resolution, batch) -> median / fastest backend's median."""
    best: dict = {}
    for r in rows:
        key = (r["model"], r["mode"], r["resolution"], r["batch"])
        best[key] = min(best.get(key, float("inf")), r["median_s"])
    return {(r["backend"], *k): r["median_s"] / best[k] for r in rows
            for k in [(r["model"], r["mode"], r["resolution"], r["batch"])] if best[k] > 0}


def sl_unet_ratios(rows: list[dict]) -> dict:
    """(backend, mode, resolution, batch) -> {config: SL-UNet median / UNet median}."""
    medians = {(r["backend"], r["mode"], r["resolution"], r["batch"], r["model"]): r["median_s"] for r in rows}
    out: dict = {}
    for (backend, mode, res, batch, model), t in medians.items():
        spec = _spec(model)
        if spec is None or spec.family != "sl_unet":
            continue
        unet = medians.get((backend, mode, res, batch, spec.twin))
        if unet:
            out.setdefault((backend, mode, res, batch), {})[spec.variant] = t / unet
    return out


def _config_order(config: str) -> int:
    """SL-UNet configurations ("5l1r", ...) in the registry's order."""
    from keras_sl import registry

    variants = [spec.variant for spec in registry.specs("sl_unet")]
    return variants.index(config) if config in variants else len(variants)


def format_markdown(reports: list[dict], command: str | None = None) -> str:
    """Markdown README for one report per backend (as written by ``keras-sl bench --json``)."""
    known = {b: i for i, b in enumerate(BACKENDS)}
    reports = sorted(reports, key=lambda rep: (known.get(_raw_backend(rep), len(known)), _backend(rep)))
    order = {_backend(rep): i for i, rep in enumerate(reports)}
    all_rows = []
    for rep in reports:
        for r in rep["results"]:
            all_rows.append({**r, "backend": _backend(rep)})
    # Main tables: each model's default execution path ("auto:auto"); other
    # SL paths go to their own table.
    rows = [r for r in all_rows if r.get("variant", "-") in ("-", "auto:auto")]
    vs_fastest = backend_ratios(rows)
    sl_ratios = sl_unet_ratios(rows)
    dates = sorted(rep["machine"].get("date", "") for rep in reports if rep["machine"].get("date"))

    lines = ["# keras_sl speed benchmarks", ""]
    lines.append("Inference (`predict_on_batch`) and training (`train_on_batch`) step times of SL-UNet and "
                 "MONAI-style UNet under each Keras backend, on one random batch, with the backends' float32 "
                 "matmul speed as the reference peak.")
    lines.append("")
    when = "" if not dates else dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    if command:
        lines += [f"Produced by `{command}`" + (f", measured {when} (UTC)." if when else "."), ""]
    elif when:
        lines += [f"Measured {when} (UTC).", ""]

    # machine and versions
    lines += ["## Machine and versions", ""]
    if reports:
        m = reports[0]["machine"]
        cpus = f"{m.get('cpu_count')} logical CPU(s)"
        if m.get("cpu_affinity") and m.get("cpu_affinity") != m.get("cpu_count"):
            cpus += f", {m['cpu_affinity']} usable"
        lines += [
            f"- CPU: {m.get('cpu_model') or '?'} ({cpus})",
            f"- Platform: {m.get('platform')}",
            f"- Python {m.get('python')}, NumPy {m.get('numpy')}, Keras {m.get('keras')}",
            "",
            "| backend | version | accelerator | matmul peak GFLOP/s (float32) | date (UTC) | load avg start / end | "
            "settings |",
            "|---|---|---|---:|---|---|---|",
        ]
        for rep in reports:
            m = rep["machine"]
            s = rep.get("settings", {})
            version = m.get("backend_version") or "?"
            if m.get("jaxlib"):
                version += f" (jaxlib {m['jaxlib']})"
            if m.get("torch_threads"):
                version += f", {m['torch_threads']} threads"
            load = " / ".join(str(m[k][0]) for k in ("loadavg_start", "loadavg_end") if m.get(k)) or "-"
            settings = (f"{s.get('resolution', '?')}x{s.get('resolution', '?')}, batch {s.get('batch', '?')}, "
                        f"median of {s.get('repeats', '?')}, {s.get('warmup', '?')} warm-up call(s), "
                        f"matmul {rep.get('matmul_size', '?')}^2")
            lines.append(f"| {_backend(rep)} | {version} | {m.get('accelerator') or 'CPU'} | "
                         f"{_fmt(rep['matmul_gflops'], '.1f')} | {m.get('date', '?')} | {load} | {settings} |")
        lines.append("")
        commands = [(_raw_backend(rep), rep["command"]) for rep in reports if rep.get("command")]
        if commands:
            lines += ["Per-backend commands:", ""]
            lines += [f"- `KERAS_BACKEND={b} {c}`" for b, c in commands]
            lines.append("")

    # main table
    lines += ["## Step times", "",
              "| backend | model | mode | input | median s | GFLOP | GFLOP/s | % of matmul peak | "
              "x fastest backend | first call s | page faults / call | peak RSS MiB | row RSS MiB |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    model_order = {name: i for i, name in enumerate(ALL_MODELS.split(","))}
    for r in sorted(rows, key=lambda r: (r["mode"] != "infer", r["mode"], r["resolution"], r["batch"],
                                         model_order.get(r["model"], 99), r["model"],
                                         order.get(r["backend"], 99))):
        ratio = vs_fastest.get((r["backend"], r["model"], r["mode"], r["resolution"], r["batch"]))
        lines.append(
            f"| {r['backend']} | {r['model']} | {r['mode']} | {r['batch']}x{r['resolution']}x{r['resolution']} | "
            f"{_fmt(r['median_s'], '.4f')} | {_fmt(r['gflops'], '.2f')} | {_fmt(r['achieved_gflops'], '.1f')} | "
            f"{_fmt(100 * r['peak_fraction'] if r.get('peak_fraction') is not None else None, '.1f')} | "
            f"{_fmt(ratio, '.2f')} | {_fmt(r.get('warmup_s'), '.1f')} | {_fmt(r.get('page_faults'), 'd')} | "
            f"{_fmt(r.get('peak_rss_mib'), '.0f')} | "
            f"{_fmt(r.get('rss_hwm_mib'), '.0f')} |"
        )
    lines.append("")

    # SL-UNet / UNet
    configs = sorted({c for ratios in sl_ratios.values() for c in ratios}, key=_config_order)
    lines += ["## SL-UNet / UNet time ratio", "",
              "Median SL-UNet step time divided by the UNet's of the same levels and residual units "
              "(below 1: SL-UNet is faster).", ""]
    if configs:
        lines += ["| backend | mode | input | " + " | ".join(configs) + " |",
                  "|---|---|---|" + "---:|" * len(configs)]
        for (backend, mode, res, batch), ratios in sorted(
                sl_ratios.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1] != "infer", kv[0][2:])):
            cells = " | ".join(_fmt(ratios.get(c), ".2f") for c in configs)
            lines.append(f"| {backend} | {mode} | {batch}x{res}x{res} | {cells} |")
    else:
        lines.append("(no SL-UNet/UNet pair of the same configuration was measured)")
    lines.append("")

    # SL-UNet / UNet, interleaved
    pairs = [{**pair, "backend": _backend(rep)} for rep in reports for pair in rep.get("pairs") or []]
    if pairs:
        lines += ["## SL-UNet / UNet, calls interleaved", "",
                  "Both models of a configuration in one process, warmed up, then their calls alternated "
                  "(SL UNet, UNet SL, ...): **ratio** is the median of the per-round SL / UNet times, "
                  "**quartiles** its 25th-75th percentiles. A machine whose speed drifts between minutes slows "
                  "both calls of a round alike, so this ratio varies less between runs than the ratio of "
                  "medians measured minutes apart (above).", "",
                  "| backend | mode | input | config | rounds | SL-UNet median s | UNet median s | ratio | "
                  "quartiles |",
                  "|---|---|---|---|---:|---:|---:|---:|---|"]
        for r in sorted(pairs, key=lambda r: (r["mode"] != "infer", _config_order(r["config"]),
                                              order.get(r["backend"], 99))):
            q1, q3 = r["ratio_quartiles"]
            lines.append(f"| {r['backend']} | {r['mode']} | {r['batch']}x{r['resolution']}x{r['resolution']} | "
                         f"{r['config']} | {r['rounds']} | {_fmt(r['sl_median_s'], '.4f')} | "
                         f"{_fmt(r['unet_median_s'], '.4f')} | **{_fmt(r['ratio_median'], '.2f')}** | "
                         f"{_fmt(q1, '.2f')}-{_fmt(q3, '.2f')} |")
        lines.append("")

    # backend comparison
    backends = [_backend(rep) for rep in reports]
    keys = sorted({(r["model"], r["mode"], r["resolution"], r["batch"]) for r in rows},
                  key=lambda k: (k[1] != "infer", k[1], k[2], k[3], model_order.get(k[0], 99), k[0]))
    medians = {(r["backend"], r["model"], r["mode"], r["resolution"], r["batch"]): r["median_s"] for r in rows}
    lines += ["## Backends compared", "",
              "Median step seconds, and in brackets the ratio to the fastest backend for that model and mode.", "",
              "| model | mode | input | " + " | ".join(backends) + " |",
              "|---|---|---|" + "---:|" * len(backends)]
    for key in keys:
        cells = []
        for b in backends:
            t = medians.get((b, *key))
            cells.append("-" if t is None else f"{t:.4f} (x{vs_fastest[(b, *key)]:.2f})")
        model, mode, res, batch = key
        lines.append(f"| {model} | {mode} | {batch}x{res}x{res} | " + " | ".join(cells) + " |")
    lines.append("")

    # SL execution paths
    variant_rows = [r for r in all_rows if r.get("variant", "-") != "-"]
    if len({r["variant"] for r in variant_rows}) > 1:
        default = {(r["backend"], r["model"], r["mode"], r["resolution"], r["batch"]): r["median_s"]
                   for r in variant_rows if r["variant"] == "auto:auto"}
        lines += ["## SL execution paths", "",
                  "The same SL-UNet weights run by each `SLUNet(backbone_layout=..., conv_strategy=...)` path "
                  "(outputs equal within 1e-5); `auto:auto` is the default the tables above use.", "",
                  "| backend | model | mode | input | requested | layout | convolutions | median s | "
                  "% of matmul peak | x auto |",
                  "|---|---|---|---|---|---|---|---:|---:|---:|"]
        for r in sorted(variant_rows, key=lambda r: (order.get(r["backend"], 99), r["model"], r["mode"] != "infer",
                                                     r["median_s"])):
            base = default.get((r["backend"], r["model"], r["mode"], r["resolution"], r["batch"]))
            lines.append(
                f"| {r['backend']} | {r['model']} | {r['mode']} | {r['batch']}x{r['resolution']}x{r['resolution']} | "
                f"{r['variant']} | {r.get('backbone_layout', '-')} | {r.get('conv_strategy', '-')} | "
                f"{_fmt(r['median_s'], '.4f')} | "
                f"{_fmt(100 * r['peak_fraction'] if r.get('peak_fraction') is not None else None, '.1f')} | "
                f"{_fmt(r['median_s'] / base if base else None, '.2f')} |")
        lines.append("")

    # conventions
    lines += ["## How to read this", "",
              "- **median s**: median wall-clock seconds of one `predict_on_batch` (infer) or `train_on_batch` "
              "(train) call on one batch, after warm-up; each call returns host values, so device work is "
              "included. SL-UNet inference runs the `SLUNet.predict` graph (lift, 3-D UNet up to its last unit, whose kernels sum the selected slices directly: the unselected slices are never computed; its GFLOP still count the full model, as the paper's Table II does). "
              "**first call s** is the first call: tracing/compilation plus one step.",
              "- **GFLOP**: 2 x MACs of `keras_sl.profile` (thop's rules, the paper's Table II counting) x batch; "
              "a training step counts 3 x the forward FLOPs (forward plus backward); optimizer and loss are "
              "not counted. **GFLOP/s** = GFLOP / median s.",
              "- **% of matmul peak**: GFLOP/s relative to a float32 `keras.ops.matmul` of two square matrices "
              "timed in the same process with the same backend (median of several runs).",
              "- **x fastest backend**: this backend's median / the smallest median over the backends for the same "
              "model, mode and input.",
              "- **page faults / call**: median minor page faults of one timed call (`getrusage`). Thousands "
              "mean buffers are mapped fresh and touched on every call instead of being reused (on JAX, Eigen's "
              "packing buffers in XLA's worker threads, see the README's speed section); such rows vary with "
              "what the process ran before them.",
              "- **peak RSS MiB**: `resource.getrusage(RUSAGE_SELF).ru_maxrss` after the row: the process's "
              "high-water mark so far (earlier rows included), an upper bound. **row RSS MiB**: Linux `VmHWM` reset "
              "(`/proc/self/clear_refs`) before the row: that row's peak resident memory, including the framework "
              "and allocator caches the process already held. Accelerator memory is in the JSON "
              "(`device_memory`, null on CPU).",
              "- Training uses `SLUNet.compile()` defaults and, for the UNet, AdamW + `StructureLoss` + Dice "
              "(as `keras_sl.training`), `jit_compile=False` on TensorFlow and torch, XLA on JAX.",
              "- JAX on CPU: both models' steps compile with XLA's YNNPACK library fusions off "
              "(`keras_sl.models.xla_compile_options`, per compilation; `KERAS_SL_XLA_CPU_LIBRARY_FUSIONS=1` "
              "keeps XLA's default).",
              "- torch inference (`keras_sl.models.inference_graph`): `jit_compile=auto` replays a "
              "`torch.export` graph of the model captured during warm-up; **torch (jit_compile=true)** compiles "
              "that graph with inductor. Capture + compile seconds are `graph_capture_s` in the JSON, not in "
              "**first call s**. torch training steps run eagerly in both columns.",
              "- Raw times: `results/<backend>.json`. A loaded machine (see load average) slows every row; "
              "compare rows measured together.",
              ""]
    return "\n".join(lines)


MONAI_JSON = "monai_comparison.json"


def run_monai(args, results_dir: Path) -> Path | None:
    """``benchmarks/monai_comparison.py`` under torch (keras_sl vs the paper's MONAI stack)."""
    out = results_dir / MONAI_JSON
    cmd = [sys.executable, str(HERE / "monai_comparison.py"), "--resolution", str(args.resolution),
           "--batch", str(args.batch), "--rounds", str(args.monai_rounds), "--json", str(out)]
    print("+ KERAS_BACKEND=torch " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    done = subprocess.run(cmd, env=dict(os.environ, KERAS_BACKEND="torch"))
    return out if done.returncode == 0 and out.is_file() else None


def format_monai(report: dict) -> str:
    """The keras_sl-vs-MONAI section of the report, from its JSON."""
    m, c, st = report["machine"], report["check"], report["settings"]
    lines = [
        "## keras_sl vs MONAI (the paper's own stack)",
        "",
        "keras_sl's SL-UNet 5L/1Res against `monai.networks.nets.UNet(spatial_dims=3, in_channels=3, "
        "out_channels=1, channels=(8,)*5, strides=(2,)*4, num_res_units=1)` in plain PyTorch on the lifted "
        "image, same weights, one process, calls interleaved (both warmed up); **ratio** = median of the "
        "per-round keras_sl / MONAI times. Inference: keras_sl `predict` graph vs MONAI in eval mode under "
        "`torch.inference_mode()` (lift, network, sum of the 5 selected slices, sigmoid). Train step: keras_sl "
        "`train_on_batch` (`compile()` defaults) vs MONAI forward + the same structure loss on every slice + "
        "backward + `clip_grad_value_(0.5)` + AdamW.",
        "",
        f"Measured {m.get('date', '?')} with `{report['command']}` (torch {m.get('backend_version')}, "
        f"{m.get('torch_threads')} threads, MONAI {m.get('monai')}; load average {m.get('loadavg_start')} -> "
        f"{m.get('loadavg_end')}). Same function: max |diff| {c['lifted_logits_max_abs_diff']:.1e} on the lifted "
        f"logits, {c['prediction_max_abs_diff']:.1e} on the predictions.",
        "",
        f"| {st['batch']}x{st['resolution']}x{st['resolution']} | keras_sl median s | MONAI median s | ratio | "
        "quartiles |",
        "|---|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        q1, q3 = r["ratio_quartiles"]
        title = "inference" if r["mode"] == "infer" else "train step"
        lines.append(f"| {title} | {r['keras_sl_median_s']:.4f} | {r['monai_median_s']:.4f} | "
                     f"**{r['ratio_median']:.2f}** | {q1:.2f}-{q3:.2f} |")
    lines += ["", f"Raw per-round times: `results/{MONAI_JSON}`.", ""]
    return "\n".join(lines)


def write_readme(reports: list[dict], path: Path, command: str | None = None, monai: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = format_markdown(reports, command)
    if monai is not None:
        text = text.rstrip("\n") + "\n\n" + format_monai(monai)
    path.write_text(text)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=ALL_MODELS, help="comma-separated model names (default: all 8)")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mode", choices=["infer", "train", "both"], default="both")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--backends", default=None,
                   help="comma-separated Keras backends, each optionally BACKEND:JIT (e.g. torch:true); "
                        f"default {','.join(BACKENDS)}, or with --report-only every JSON in --results-dir")
    p.add_argument("--sl-variants", default="auto:auto",
                   help="SL execution paths LAYOUT:STRATEGY to time (comma-separated; see keras-sl bench)")
    p.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto")
    p.add_argument("--paired", type=int, default=15, metavar="ROUNDS",
                   help="interleaved SL-UNet / UNet calls per pair and mode (keras-sl bench --paired; 0: off)")
    p.add_argument("--results-dir", default=str(HERE / "results"), help="per-backend JSON folder")
    p.add_argument("--out", default=str(HERE / "README.md"), help="markdown report")
    p.add_argument("--report-only", action="store_true", help="skip running; rebuild the report from the JSON files")
    p.add_argument("--monai-rounds", type=int, default=15, metavar="ROUNDS",
                   help="also run benchmarks/monai_comparison.py under torch with this many interleaved rounds "
                        "(0: skip; its last JSON is still reported)")
    return p


def record_command(paths, command: str) -> None:
    """Store the run_all command in each backend's JSON, so that
    ``--report-only`` can name it in a rebuilt report."""
    for path in paths:
        report = json.loads(Path(path).read_text())
        report["run_all_command"] = command
        Path(path).write_text(json.dumps(report, indent=2))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    results_dir = Path(args.results_dir)
    failed = []
    if args.report_only and args.backends is None:
        # whatever the last run wrote, torch:true included
        paths = sorted(p for p in results_dir.glob("*.json") if p.name != MONAI_JSON)
    else:
        runs = [parse_run(b, args.jit_compile) for b in (args.backends or ",".join(BACKENDS)).split(",")
                if b.strip()]
        if not args.report_only:
            for backend, jit in runs:
                if run_backend(backend, args, results_dir, jit) is None:
                    failed.append(f"{backend}:{jit}")
        paths = [results_dir / results_name(b, j, args.jit_compile) for b, j in runs if f"{b}:{j}" not in failed]
    reports = load_reports(paths)
    if not reports:
        print("no results to report", file=sys.stderr)
        return 1
    if args.report_only:
        # The command that produced the JSON files, as recorded when they were run.
        recorded = {rep.get("run_all_command") for rep in reports}
        command = recorded.pop() if len(recorded) == 1 else None
    else:
        command = "python benchmarks/run_all.py" + "".join(" " + shlex.quote(a) for a in argv)
        record_command(paths, command)
    if not args.report_only and args.monai_rounds > 0 and run_monai(args, results_dir) is None:
        failed.append("monai_comparison")
    monai_path = results_dir / MONAI_JSON
    monai = json.loads(monai_path.read_text()) if monai_path.is_file() else None
    out = write_readme(reports, Path(args.out), command, monai)
    print(f"\nwrote {out}" + (f"; failed backends: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
