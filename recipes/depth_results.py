"""Table VIII-style rows from the depth runs, and each SL depth model against its 2-D twin per test image.

Usage: python recipes/depth_results.py [RUNS]   (default: runs; reads RUNS/<name>/results.json and per_image.json)
"""

import json
import sys
from pathlib import Path

import numpy as np

NAMES = ("sevenscenes_effnetlite0_fastdepth", "sevenscenes_effnetlite0_sl_fastdepth",
         "sevenscenes_effnetlite0_midas", "sevenscenes_effnetlite0_sl_midas")


def _load(runs: Path, name: str):
    folder = runs / name
    if not (folder / "results.json").is_file():
        return None, None
    return json.loads((folder / "results.json").read_text()), json.loads((folder / "per_image.json").read_text())


def _column(rows, key: str) -> np.ndarray:
    return np.array([r[key] for r in rows], dtype=float)


def main(runs: str = "runs") -> None:
    runs = Path(runs)
    print("| run | decoder params | RMSE ↓ | AbsRel ↓ | log10 ↓ | δ1 ↑ | δ2 ↑ | δ3 ↑ | Q–RMSE r / ρ | epochs | train time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for name in NAMES:
        r, _ = _load(runs, name)
        if r is None:
            print(f"| `{name}` | | | | | | | | | | not run |")
            continue
        t = r["test"]
        pqa = f"{t['pqa_pearson']:.3f} / {t['pqa_spearman']:.3f}" if "pqa_pearson" in t else "–"
        print(f"| `{name}` | {r.get('decoder_parameters', r['parameters']):,} | {t['rmse']:.4f} | {t['abs_rel']:.4f} | "
              f"{t['log10']:.4f} | {t['delta1']:.4f} | {t['delta2']:.4f} | {t['delta3']:.4f} | {pqa} | "
              f"{r['epochs']} | {r['train_seconds'] / 60:.0f} min |")
    print("\nSL model vs its 2-D twin, per test image (same images, same order):")
    for sl_name in (n for n in NAMES if "_sl_" in n):
        twin = sl_name.replace("_sl_", "_")
        (a, pa), (b, pb) = _load(runs, sl_name), _load(runs, twin)
        if a is None or b is None:
            continue
        sl, flat = _column(pa, "rmse"), _column(pb, "rmse")
        d1, d1_flat = _column(pa, "delta1"), _column(pb, "delta1")
        print(f"- {sl_name} vs {twin}: mean RMSE {sl.mean():.4f} vs {flat.mean():.4f}, lower on "
              f"{int((sl < flat).sum())} of {len(sl)} images (median difference {np.median(sl - flat):+.4f} m); "
              f"mean δ1 {d1.mean():.4f} vs {d1_flat.mean():.4f}, higher on {int((d1 > d1_flat).sum())}")


if __name__ == "__main__":
    main(*sys.argv[1:])
