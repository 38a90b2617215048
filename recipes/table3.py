"""Table III recipe: UNet vs SL-UNet on a segmentation dataset (and the depth models on a depth dataset).

Example (one configuration; the preset folder is named
``<dataset>_<model name>``, :func:`keras_sl.registry.preset_name`):

    KERAS_BACKEND=tensorflow python recipes/table3.py --dataset kvasir \
        --data ../shared/data/kvasir-seg --model sl_unet_8l2r \
        --resolution 256 --epochs 40 --out runs/kvasir_sl_unet_8l2r --preset pretrained/kvasir_sl_unet_8l2r

``--model sl_unet --levels 8 --res 2`` names the same model.

Rerunning the command after an interruption (even a SIGKILL, at any point)
continues the run and gives the results of an uninterrupted one; rerunning
a finished run prints one line and trains nothing (``--force`` trains again).
Training stops at the first NaN/Inf loss, keeping the last good epoch's backup.
"""

import argparse
import shlex
import sys

from keras_sl import registry
from keras_sl.cli_errors import resolution_arg
from keras_sl.training import model_name, train_segmentation


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", required=True, help="dataset folder in its official layout")
    p.add_argument("--model", default="sl_unet_5l1r",
                   help="a model name (" + ", ".join(registry.names("sl_unet") + registry.names("unet"))
                   + ", or an <encoder>_<decoder> pair such as effnetlite0_sl_emcad) or a family with --levels and --res")
    p.add_argument("--levels", type=int, help="with a family --model: levels (default 5)")
    p.add_argument("--res", type=int, help="with a family --model: residual units (default 1)")
    p.add_argument("--resolution", type=resolution_arg, default=256,
                   help="training size: one side (256) or HEIGHTxWIDTH (192x256)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patches-per-image", type=int,
                   help="train at full resolution on this many random --resolution patches of every image per "
                        "epoch; the model then predicts by sliding windows of that size (DRIVE)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-multiscale", action="store_true")
    p.add_argument("--out", required=True, help="run folder (log.csv, backup/, results.json)")
    p.add_argument("--preset", help="also save the trained model as a preset folder here")
    p.add_argument("--init-preset", help="start from this preset's architecture and weights (continue or fine-tune)")
    p.add_argument("--data-parallel", action="store_true",
                   help="train on all local devices (JAX DataParallel / tf.distribute.MirroredStrategy)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="encoder-decoder models: train the decoder only (the ImageNet encoder stays fixed)")
    p.add_argument("--force", action="store_true",
                   help="train again even if --out holds a finished run (and replace the --preset folder)")
    p.add_argument("--verbose", type=int, default=2, help="Keras verbosity: 1 progress bar, 2 one line per epoch")
    args = p.parse_args(argv)
    try:
        name = model_name(args.model, args.levels, args.res)
    except ValueError as err:
        p.error(str(err))
    command = "python recipes/table3.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    train_segmentation(
        args.dataset, args.data, args.out, model=name,
        resolution=args.resolution, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        multiscale=not args.no_multiscale, preset_dir=args.preset, command=command,
        verbose=args.verbose, data_parallel=args.data_parallel, init_preset=args.init_preset,
        freeze_encoder=args.freeze_encoder, overwrite=args.force, patches_per_image=args.patches_per_image,
    )


if __name__ == "__main__":
    main()
