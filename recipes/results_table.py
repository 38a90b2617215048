"""Print markdown rows for recipes/RESULTS.md from run folders' results.json.

Usage: python recipes/results_table.py runs/kvasir_sl_unet_8l2r runs/dsb2018_sl_unet_5l2r ...
"""

import json
import sys
from pathlib import Path

from keras_sl import registry

# Paper Table III (Dice %) and Table IV (Pearson r, Spearman rho) for comparison.
PAPER_DICE = {
    ("kvasir", "unet_5l1r"): 52.62, ("kvasir", "sl_unet_5l1r"): 52.35,
    ("kvasir", "unet_5l2r"): 71.73, ("kvasir", "sl_unet_5l2r"): 69.50,
    ("kvasir", "unet_8l1r"): 64.68, ("kvasir", "sl_unet_8l1r"): 57.49,
    ("kvasir", "unet_8l2r"): 82.69, ("kvasir", "sl_unet_8l2r"): 76.04,
    ("dsb2018", "unet_5l1r"): 87.27, ("dsb2018", "sl_unet_5l1r"): 87.82,
    ("dsb2018", "unet_5l2r"): 87.76, ("dsb2018", "sl_unet_5l2r"): 90.00,
    ("dsb2018", "unet_8l1r"): 87.96, ("dsb2018", "sl_unet_8l1r"): 87.97,
    ("dsb2018", "unet_8l2r"): 87.95, ("dsb2018", "sl_unet_8l2r"): 88.61,
}
# Table IV reports PQA for SL-UNet 8L/2Res.
PAPER_PQA = {("kvasir", "sl_unet_8l2r"): (0.7107, 0.7495), ("dsb2018", "sl_unet_8l2r"): (0.6189, 0.5271)}


def model_name(r: dict) -> str:
    """The registry name of a run (runs written before ``model_name`` existed:
    from its family, levels and residual units)."""
    if r.get("model_name"):
        return r["model_name"]
    return registry.resolve(r["model"], levels=r["levels"], num_res_units=r["num_res_units"])


def row(run: Path) -> str:
    r = json.loads((run / "results.json").read_text())
    name = model_name(r)
    t = r["test"]
    paper = PAPER_DICE.get((r["dataset"], name))
    pqa = (f"{t['pqa_pearson']:.4f} / {t['pqa_spearman']:.4f}" if "pqa_pearson" in t else "–")
    ppqa = PAPER_PQA.get((r["dataset"], name))
    title = registry.parse(name).title if name in registry.names() else name
    return (
        f"| {r['dataset']} | {title} "
        f"| {r['resolution']}² | {r['epochs']} | {100 * t['dice']:.2f} | {paper if paper is not None else '–'} "
        f"| {pqa} | {f'{ppqa[0]:.4f} / {ppqa[1]:.4f}' if ppqa else '–'} | {r['train_seconds'] / 60:.0f} min {r['backend']} "
        f"| `{r['command']}` |"
    )


if __name__ == "__main__":
    print("| dataset | model | input | epochs | Dice % (ours) | Dice % (paper) | PQA r / ρ (ours) | PQA r / ρ (paper) | training | command |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |")
    for arg in sys.argv[1:]:
        print(row(Path(arg)))
