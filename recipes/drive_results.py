"""DRIVE results: the SL-UNet and its 2-D twin inside the field of view, next to the second observer.

Usage: python recipes/drive_results.py [RUNS] [DRIVE]   (defaults: runs, ../shared/data/drive; reads
RUNS/drive_<model>/results.json and per_image.json, written by recipes/run_drive.sh)

The second observer (``test/2nd_manual``) scored against the first, on the same field-of-view pixels, is the
human reference of the test set. Its maps are binary, so its AUC is (Se + Sp) / 2.
"""

import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from keras_sl.datasets import DRIVE
from keras_sl.metrics import REGION_METRIC_NAMES, PooledRegionMetrics, region_metrics

RUNS = ("drive_sl_unet_5l1r", "drive_unet_5l1r", "drive_sl_unet_5l2r", "drive_unet_5l2r")
SHOWN = ("dice", "auc", "sensitivity", "specificity", "accuracy")


def second_observer(data: str) -> tuple[dict, dict, list]:
    """Mean-per-image and pooled metrics of the second observer against the first, inside the FOV."""
    ds = DRIVE(data)
    pooled, rows = PooledRegionMetrics(), []
    for sample in ds.split("test"):
        _, first = ds.load(sample)
        second = ds.read_mask([sample.extra["second_observer"]])
        roi = ds.read_region(sample, ds.region_of_interest)
        rows.append({"id": sample.id, **region_metrics(first, second, roi)})
        pooled.add(first, second, roi)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in REGION_METRIC_NAMES}
    return mean, pooled.result(), rows


def _cells(metrics: dict) -> str:
    return " | ".join(f"{metrics[k]:.4f}" for k in SHOWN)


def main(runs: str = "runs", data: str = "../shared/data/drive") -> None:
    runs = Path(runs)
    loaded = {}
    print("| model | params | " + " | ".join(SHOWN) + " | pooled Dice | pooled AUC | Q–Dice r / ρ | train time |")
    print("| --- | ---: | " + " | ".join("---:" for _ in SHOWN) + " | ---: | ---: | --- | ---: |")
    for name in RUNS:
        folder = runs / name
        if not (folder / "results.json").is_file():
            print(f"| `{name}` | | " + " | ".join("" for _ in SHOWN) + " | | | | not run |")
            continue
        r = json.loads((folder / "results.json").read_text())
        loaded[name] = json.loads((folder / "per_image.json").read_text())
        t = r["test"]
        pqa = f"{t['pqa_pearson']:.3f} / {t['pqa_spearman']:.3f}" if "pqa_pearson" in t else "–"
        print(f"| `{name}` | {r['parameters']:,} | {_cells(t)} | {t['pooled']['dice']:.4f} | "
              f"{t['pooled']['auc']:.4f} | {pqa} | {r['train_seconds'] / 60:.0f} min |")
    if Path(data).is_dir():
        mean, pooled, _ = second_observer(data)
        print(f"| second observer (human) | – | {_cells(mean)} | {pooled['dice']:.4f} | {pooled['auc']:.4f} | – | – |")
    else:
        print(f"(second observer not scored: {data} is absent)")
    for sl_name in (n for n in RUNS if "_sl_" in n):
        twin = sl_name.replace("_sl_", "_")
        if sl_name in loaded and twin in loaded:
            sl, flat = (np.array([row["dice"] for row in loaded[n]]) for n in (sl_name, twin))
            test = stats.wilcoxon(sl, flat)
            print(f"\n{sl_name} vs {twin} per test image: Dice higher on {int((sl > flat).sum())} of {len(sl)} "
                  f"(median difference {np.median(sl - flat):+.4f}, Wilcoxon p = {test.pvalue:.3g})")

if __name__ == "__main__":
    main(*sys.argv[1:])
