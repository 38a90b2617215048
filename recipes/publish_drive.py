"""Copy finished DRIVE runs into pretrained/ as built-in presets, with the metadata a shipped preset carries.

Usage: python recipes/publish_drive.py [RUNS] [DRIVE]   (defaults: runs, ../shared/data/drive)

For each finished RUNS/drive_<model> (recipes/run_drive.sh) this writes pretrained/drive_<model>: the run's preset
(weights untouched, so their sha256 still holds) with the recipe as a relative command, the device, and the second
observer's scores on the same field-of-view pixels (the human reference). `drive` names the best SL-UNet by test Dice
(pretrained/aliases.json).
"""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drive_results import second_observer

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
#: The shipped DRIVE presets. The 2-D twin of SL-UNet 5L/2Res (unet_5l2r, 26 MB) stays in runs/: the wheel is big enough.
MODELS = ("sl_unet_5l1r", "unet_5l1r", "sl_unet_5l2r")


def main(runs: str = "runs", data: str = "../shared/data/drive") -> None:
    runs = Path(runs)
    mean, pooled, _ = second_observer(data)
    human = {"test_" + k: v for k, v in mean.items()} | {"test_pooled": pooled}
    best = None
    for model in MODELS:
        name = f"drive_{model}"
        source = runs / name / "preset"
        if not (runs / name / "results.json").is_file():
            print(f"{name}: not finished, skipped")
            continue
        target = PRETRAINED / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        meta_path = target / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["recipe"] = (f"bash recipes/run_drive.sh {model}  # = python recipes/table3.py --dataset drive --data "
                          f"../shared/data/drive --model {model} --resolution 96 --patches-per-image 100 "
                          f"--batch-size 16 --epochs 40 --out runs/{name} --preset runs/{name}/preset")
        meta["split"] = "20 train / 20 test, the dataset's official split"
        meta["training"]["device"] = "2-core CPU"
        meta["training"]["train_seconds_note"] = ("wall-clock with a second training run sharing the two cores; the "
                                                  "run was stopped and resumed from its epoch backups")
        meta["human_reference"] = {"what": "second observer (test/2nd_manual) against the first, same FOV pixels; "
                                           "binary maps, so its AUC is (Se + Sp) / 2", "metrics": human}
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        dice = meta["metrics"]["test_dice"]
        print(f"{name}: published to {target} (test Dice {dice:.4f})")
        if model.startswith("sl_") and (best is None or dice > best[1]):
            best = (name, dice)
    if best:
        aliases_path = PRETRAINED / "aliases.json"
        aliases = json.loads(aliases_path.read_text())
        aliases["drive"] = best[0]
        aliases_path.write_text(json.dumps(dict(sorted(aliases.items())), indent=1) + "\n")
        print(f"drive = {best[0]}")


if __name__ == "__main__":
    main(*sys.argv[1:])
