"""Rows for recipes/RESULTS.md from the decoder runs, and each SL decoder against its 2-D twin per image.

Usage: python recipes/decoder_results.py [RUNS]   (default: runs; reads RUNS/<name>/results.json and per_image.json)
"""

import json
import sys
from pathlib import Path

import numpy as np

from keras_sl import registry

NAMES = ("kvasir_effnetlite0_sl_unet_8l2r", "kvasir_effnetlite0_unet_8l2r", "kvasir_effnetlite0_emcad",
         "kvasir_effnetlite0_sl_emcad", "dsb2018_effnetlite0_sl_unet_8l2r", "dsb2018_effnetlite0_unet_8l2r",
         "dsb2018_effnetlite0_emcad", "dsb2018_effnetlite0_sl_emcad")


def _load(runs: Path, name: str):
    folder = runs / name
    if not (folder / "results.json").is_file():
        return None, None
    per_image = json.loads((folder / "per_image.json").read_text())
    return json.loads((folder / "results.json").read_text()), per_image


def _dice(per_image) -> np.ndarray:
    return np.array([p["dice"] for p in per_image], dtype=float)


def main(runs: str = "runs") -> None:
    runs = Path(runs)
    print("| run | decoder params | test Dice | PQA r / ρ | epochs | train time |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for name in NAMES:
        r, _ = _load(runs, name)
        if r is None:
            print(f"| `{name}` | | | | | not run |")
            continue
        t = r["test"]
        pqa = f"{t['pqa_pearson']:.3f} / {t['pqa_spearman']:.3f}" if "pqa_pearson" in t else "–"
        print(f"| `{name}` | {r.get('decoder_parameters', r['parameters']):,} | {t['dice']:.4f} | {pqa} | "
              f"{r['epochs']} | {r['train_seconds'] / 60:.0f} min |")
    print("\nSL decoder vs its 2-D twin, per test image (same images, same order):")
    for name in NAMES:
        model = name.split("_", 1)[1]
        spec = registry.parse(model)
        if not spec.lifted:
            continue
        twin = f"{name.split('_', 1)[0]}_{spec.twin}"
        (a, pa), (b, pb) = _load(runs, name), _load(runs, twin)
        if a is None or b is None:
            continue
        sl, flat = _dice(pa), _dice(pb)
        print(f"- {name} vs {twin}: mean Dice {sl.mean():.4f} vs {flat.mean():.4f}; SL better on "
              f"{int((sl > flat).sum())} of {len(sl)} images, worse on {int((sl < flat).sum())}; "
              f"median difference {np.median(sl - flat):+.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
