"""Print markdown rows for recipes/RESULTS.md from run folders' results.json.

Usage: python recipes/results_table.py runs/kvasir_sl_8l2r runs/dsb2018_sl_5l2r ...
"""

import json
import sys
from pathlib import Path

# Paper Table III (Dice %) and Table IV (Pearson r, Spearman rho) for comparison.
PAPER_DICE = {
    ("kvasir", "unet", 5, 1): 52.62, ("kvasir", "sl_unet", 5, 1): 52.35,
    ("kvasir", "unet", 5, 2): 71.73, ("kvasir", "sl_unet", 5, 2): 69.50,
    ("kvasir", "unet", 8, 1): 64.68, ("kvasir", "sl_unet", 8, 1): 57.49,
    ("kvasir", "unet", 8, 2): 82.69, ("kvasir", "sl_unet", 8, 2): 76.04,
    ("dsb2018", "unet", 5, 1): 87.27, ("dsb2018", "sl_unet", 5, 1): 87.82,
    ("dsb2018", "unet", 5, 2): 87.76, ("dsb2018", "sl_unet", 5, 2): 90.00,
    ("dsb2018", "unet", 8, 1): 87.96, ("dsb2018", "sl_unet", 8, 1): 87.97,
    ("dsb2018", "unet", 8, 2): 87.95, ("dsb2018", "sl_unet", 8, 2): 88.61,
}
PAPER_PQA = {"kvasir": (0.7107, 0.7495), "dsb2018": (0.6189, 0.5271)}


def row(run: Path) -> str:
    r = json.loads((run / "results.json").read_text())
    key = (r["dataset"], r["model"], r["levels"], r["num_res_units"])
    t = r["test"]
    paper = PAPER_DICE.get(key)
    pqa = (f"{t['pqa_pearson']:.4f} / {t['pqa_spearman']:.4f}" if "pqa_pearson" in t else "–")
    ppqa = PAPER_PQA.get(r["dataset"]) if r["model"] == "sl_unet" and (r["levels"], r["num_res_units"]) == (8, 2) else None
    return (
        f"| {r['dataset']} | {'SL-UNet' if r['model'] == 'sl_unet' else 'UNet'} {r['levels']}L/{r['num_res_units']}Res "
        f"| {r['resolution']}² | {r['epochs']} | {100 * t['dice']:.2f} | {paper if paper is not None else '–'} "
        f"| {pqa} | {f'{ppqa[0]:.4f} / {ppqa[1]:.4f}' if ppqa else '–'} | {r['train_seconds'] / 60:.0f} min {r['backend']} "
        f"| `{r['command']}` |"
    )


if __name__ == "__main__":
    print("| dataset | model | input | epochs | Dice % (ours) | Dice % (paper) | PQA r / ρ (ours) | PQA r / ρ (paper) | training | command |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |")
    for arg in sys.argv[1:]:
        print(row(Path(arg)))
