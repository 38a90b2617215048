"""Choose the PQA flagging threshold ``q_threshold`` of a preset on validation images.

``keras-sl predict`` flags an image as low quality when its PQA score does
not reach the preset's ``q_threshold`` (``not (Q >= q_threshold)``, so a NaN
Q is always flagged). This recipe chooses that threshold on a validation part
of the **training** split — the test split is never read — and writes it,
with how it was chosen, into a copy of the preset's metadata::

    KERAS_BACKEND=tensorflow python recipes/pqa_threshold.py --preset kvasir \
        --data ../shared/data/kvasir-seg --metadata-out runs/kvasir_q/metadata.json

Copy ``q_threshold`` and ``q_threshold_selection`` from that file into the
preset's ``metadata.json`` (the weights and their sha256 are unchanged).

Validation part. The dataset's training split (``Dataset.split("train")``,
the split every preset was trained on) is split again with
:func:`keras_sl.datasets.splits.deterministic_split`: its sorted ids,
permuted by PCG64 with ``--seed`` (default 2026, not the 2025 of the
train/test split), and the first ``round(fraction * n_train)`` (default 10 %:
88 of Kvasir-SEG's 880) form the validation part. The same ids on every
machine and backend.

Rule (default ``--rule coverage --coverage 0.9``): the threshold is the Q of
the ``ceil(0.9 n)``-th most confident validation image, so at least 90 % of
the validation images pass and the least confident ~10 % are flagged
(:func:`keras_sl.selective.threshold_at_coverage`). Why coverage and not a
target risk: the shipped presets were trained on the *whole* training split,
so the validation images were seen in training and their Dice is optimistic;
a threshold set to reach a target Dice on them would flag too few unseen
images. A coverage rule uses only the ranking by Q, which is what PQA is
for; seen images also score higher Q, so on new images the threshold flags
somewhat *more* than 10 % — the safe direction for a quality flag — and the
review workload stays predictable. ``keras-sl evaluate`` reports the Dice of
the kept images at 90 % coverage on the test split, which is what this
threshold aims at. ``--rule risk --max-risk R`` instead takes the lowest
threshold whose kept validation images have a mean ``1 - Dice`` of at most R
(:func:`keras_sl.selective.threshold_at_risk`); use it with a model trained
without the validation part. The stored threshold is rounded *down* to 4
decimals (never flags an image the exact value keeps).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np

from keras_sl.datasets.splits import deterministic_split

#: Seed of the validation permutation (the train/test split uses 2025).
VALIDATION_SEED = 2026


def validation_ids(train_ids, fraction: float = 0.1, seed: int = VALIDATION_SEED) -> list[str]:
    """The validation part of a training split: ``round(fraction * n)`` of its
    ids (at least 1), chosen by :func:`deterministic_split` with ``seed``;
    sorted, independent of the order of ``train_ids``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    ids = list(train_ids)
    n_val = max(1, int(round(fraction * len(ids))))
    if n_val >= len(ids):
        raise ValueError(f"The training split has {len(ids)} images: too few to hold out {n_val} for validation.")
    _, val = deterministic_split(ids, n_val, seed=seed)
    return val


def choose_threshold(q, dice, rule: str = "coverage", coverage: float = 0.9, max_risk: float | None = None) -> dict:
    """The threshold by ``rule`` and what it does on these images."""
    from keras_sl import selective

    q = np.asarray(q, dtype="float64")
    dice = np.asarray(dice, dtype="float64")
    if rule == "coverage":
        exact = selective.threshold_at_coverage(q, coverage)
        how = {"rule": "coverage", "target_coverage": coverage}
    elif rule == "risk":
        if max_risk is None:
            raise ValueError("--rule risk needs --max-risk (the highest mean 1 - Dice allowed on kept images).")
        exact = selective.threshold_at_risk(q, 1.0 - dice, max_risk)
        how = {"rule": "risk", "max_risk": max_risk}
    else:
        raise ValueError(f"rule must be 'coverage' or 'risk', got {rule!r}.")
    threshold = math.floor(exact * 1e4) / 1e4
    kept = ~selective.is_flagged(q, threshold)
    summary = selective.selective_summary(q, dice)
    return {
        "q_threshold": threshold,
        **how,
        "validation_images": int(q.size),
        "validation_kept": int(kept.sum()),
        "validation_coverage": float(kept.mean()),
        "validation_dice": float(dice.mean()),
        "validation_dice_kept": float(dice[kept].mean()) if kept.any() else None,
        "validation_dice_flagged": float(dice[~kept].mean()) if (~kept).any() else None,
        "validation_aurc": summary["aurc"],
        "validation_aurc_random": summary["aurc_random"],
        "validation_aurc_oracle": summary["aurc_oracle"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help="built-in preset name or preset folder")
    p.add_argument("--data", required=True, help="dataset folder in its official layout")
    p.add_argument("--dataset", help="dataset reader name (default: the preset's dataset)")
    p.add_argument("--fraction", type=float, default=0.1, help="validation part of the training split (default 0.1)")
    p.add_argument("--seed", type=int, default=VALIDATION_SEED, help="seed of the validation permutation")
    p.add_argument("--rule", choices=["coverage", "risk"], default="coverage")
    p.add_argument("--coverage", type=float, default=0.9, help="coverage rule: fraction of images to keep")
    p.add_argument("--max-risk", type=float, help="risk rule: highest mean 1 - Dice of the kept images")
    p.add_argument("--metadata-out", help="write a copy of the preset's metadata.json with q_threshold here")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if not 0.0 < args.coverage <= 1.0:
        p.error(f"--coverage must be in (0, 1], got {args.coverage}")

    import keras

    from keras_sl.datasets import get as get_dataset
    from keras_sl.evaluation import evaluate_segmentation
    from keras_sl.presets import load_preset

    model = load_preset(args.preset)
    meta = dict(model.preset_metadata)
    name = args.dataset or meta.get("dataset")
    if not name:
        p.error("the preset's metadata names no dataset; pass --dataset")
    ds = get_dataset(name, args.data)
    train = ds.split("train")
    chosen = set(validation_ids([s.id for s in train], args.fraction, args.seed))
    val = [s for s in train if s.id in chosen]
    result = evaluate_segmentation(model, ds, val)
    rows = result["per_image"]
    if rows[0]["q"] is None:
        p.error(f"{args.preset} has no PQA score (not an SL model): nothing to threshold")
    q = [float("nan") if r["q"] is None else r["q"] for r in rows]
    chosen_by = choose_threshold(q, [r["dice"] for r in rows], args.rule, args.coverage, args.max_risk)
    threshold = chosen_by.pop("q_threshold")
    selection = {
        **chosen_by,
        "validation": (f"{len(val)} of the {len(train)} {name} training images: deterministic_split(sorted train ids, "
                       f"{len(val)}, seed={args.seed}); the test split was not read"),
        "test_split_used": False,
        "validation_held_out_in_training": bool(meta.get("validation_held_out", False)),
        "backend": keras.backend.backend(),
        "command": "python recipes/pqa_threshold.py " + " ".join(shlex.quote(a) for a in argv),
    }
    print(f"q_threshold = {threshold:.4f} ({args.rule} rule on {len(val)} validation images of the training split): "
          f"keeps {chosen_by['validation_kept']} / {len(val)}, Dice kept {chosen_by['validation_dice_kept']}, "
          f"flagged {chosen_by['validation_dice_flagged']}")
    print(json.dumps(selection, indent=2))
    if args.metadata_out:
        out = Path(args.metadata_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta.update(q_threshold=threshold, q_threshold_selection=selection)
        out.write_text(json.dumps(meta, indent=2) + "\n")
        print(f"Wrote {out}: copy q_threshold and q_threshold_selection into the preset's metadata.json.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
