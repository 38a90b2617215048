"""A preset on raw images vs ``keras-sl evaluate``: the same masks, one path.

Mean Dice of ``model.predict(image[None])`` on raw uint8 images at their
native size, against the dataset's masks, next to what
:func:`keras_sl.evaluation.evaluate_segmentation` (``keras-sl evaluate``)
gives on the same images.

    KERAS_BACKEND=jax python benchmarks/raw_predict_check.py --preset kvasir \\
        --data ../shared/data/kvasir-seg --limit 60
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="kvasir")
    parser.add_argument("--data", required=True, help="dataset folder (official layout)")
    parser.add_argument("--dataset", help="reader name (default: the preset's dataset)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args(argv)

    import keras

    from keras_sl.datasets import get
    from keras_sl.evaluation import evaluate_segmentation
    from keras_sl.metrics import dice_per_image
    from keras_sl.presets import load_preset

    model = load_preset(args.preset)
    ds = get(args.dataset or model.preset_metadata["dataset"], args.data)
    samples = ds.split(args.split)[: args.limit]
    start = time.perf_counter()
    dice = []
    for sample in samples:
        image, mask = ds.load(sample)
        prob = model.predict(image[None], verbose=0)  # raw, native size: the preset preprocesses
        dice.append(float(dice_per_image(mask[None], prob)[0]))
    seconds = time.perf_counter() - start
    evaluated = evaluate_segmentation(model, ds, samples)
    result = {"backend": keras.backend.backend(), "preset": args.preset, "images": len(samples),
              "predict_raw_dice": float(np.mean(dice)), "evaluate_dice": evaluated["dice"],
              "seconds": round(seconds, 1)}
    print(f"{result['backend']}: model.predict(image[None]) on {len(samples)} raw images: mean Dice "
          f"{result['predict_raw_dice']:.4f}; keras-sl evaluate path: {result['evaluate_dice']:.4f}")
    return result


if __name__ == "__main__":
    main()
