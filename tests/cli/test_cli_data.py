"""evaluate / predict / train CLIs and the Table III recipe on small inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import keras_sl
from keras_sl.cli import main
from keras_sl.data import IDENTITY, make_cells

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def kvasir_fixture(root: Path, n: int = 8, size=(40, 52)) -> Path:
    """A tiny Kvasir-SEG folder in the official layout (JPEG masks, noisy 0/255)."""
    x, y = make_cells(n, size=64, seed=3)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = Image.fromarray((x[i] * 255).astype("uint8")).resize(size[::-1])
        msk = Image.fromarray((y[i, ..., 0] * 255).astype("uint8")).resize(size[::-1], Image.NEAREST)
        img.save(root / "images" / f"id{i:02d}.jpg")
        msk.save(root / "masks" / f"id{i:02d}.jpg", quality=90)
    return root


@pytest.fixture
def tiny_preset(tmp_path):
    model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2)
    return model.save_to_preset(tmp_path / "preset", metadata={
        "dataset": "kvasir", "input_size": [32, 32, 3], "normalization": IDENTITY, "license": "test"})


def test_evaluate_cli(tmp_path, tiny_preset, capsys):
    data = kvasir_fixture(tmp_path / "kvasir")
    out_json = tmp_path / "eval.json"
    assert main(["evaluate", "--preset", str(tiny_preset), "--data", str(data), "--split", "all",
                 "--json", str(out_json), "--out", str(tmp_path / "figs")]) == 0
    result = json.loads(out_json.read_text())
    for key in ("dice", "iou", "pqa_pearson", "pqa_spearman", "pqa_p_value", "n"):
        assert key in result
    assert result["n"] == 8 and 0 <= result["dice"] <= 1
    assert len(result["per_image"]) == 8
    assert (tmp_path / "figs" / "pqa_scatter.png").is_file()
    assert (tmp_path / "figs" / "slices.png").is_file()


def test_predict_cli_keeps_input_size(tmp_path, tiny_preset):
    data = kvasir_fixture(tmp_path / "kvasir", n=3, size=(37, 61))
    images = sorted(str(p) for p in (data / "images").iterdir())
    assert main(["predict", "--preset", str(tiny_preset), "--out", str(tmp_path / "pred"),
                 "--q-threshold", "2.0", *images]) == 0
    report = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(report["predictions"]) == 3
    for rec in report["predictions"]:
        mask = np.asarray(Image.open(rec["mask"]))
        assert mask.shape == (37, 61)
        assert set(np.unique(mask)) <= {0, 255}
        assert 0.0 <= rec["q"] <= 1.0
        assert rec["low_quality"] is True  # every Q is below the threshold 2.0
    assert Path(report["predictions"][0]["mask"]).name == "id00_mask.png"


@pytest.mark.slow  # ~1 min per backend; the recipe test below trains through the same path
def test_train_cli_and_fine_tune(tmp_path):
    data = kvasir_fixture(tmp_path / "kvasir", n=6, size=(32, 32))
    run = tmp_path / "run"
    assert main(["train", "--dataset", "kvasir", "--data", str(data), "--out", str(run), "--levels", "5",
                 "--resolution", "32", "--epochs", "1", "--batch-size", "4", "--verbose", "0",
                 "--save-preset", str(tmp_path / "trained")]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["n"] == 1 and len(results["selected_slices"]) == 5
    assert (run / "log.csv").read_text().count("\n") == 2  # header + 1 epoch
    model = keras_sl.SLUNet.from_preset(str(tmp_path / "trained"))
    assert model.selected_slices == results["selected_slices"]
    assert model.preset_metadata["recipe"].startswith("keras-sl train")
    # fine-tune from the preset
    assert main(["train", "--dataset", "kvasir", "--data", str(data), "--out", str(tmp_path / "ft"),
                 "--preset", str(tmp_path / "trained"), "--resolution", "32", "--epochs", "1",
                 "--batch-size", "4", "--verbose", "0"]) == 0
    assert json.loads((tmp_path / "ft" / "results.json").read_text())["init_preset"] == str(tmp_path / "trained")


@pytest.mark.data
def test_recipe_on_real_kvasir_images(tmp_path):
    """The Table III recipe end to end on 16 real Kvasir-SEG images."""
    src = SHARED / "kvasir-seg"
    if not (src / "images").is_dir():
        pytest.skip(f"real data not found at {src} (../shared/data is only on development machines)")
    sub = tmp_path / "kvasir"
    (sub / "images").mkdir(parents=True)
    (sub / "masks").mkdir()
    for p in sorted((src / "images").iterdir())[:16]:
        (sub / "images" / p.name).symlink_to(p)
        (sub / "masks" / p.name).symlink_to(src / "masks" / p.name)
    import runpy
    import sys

    argv = ["table3.py", "--dataset", "kvasir", "--data", str(sub), "--model", "sl_unet", "--levels", "5",
            "--res", "1", "--resolution", "64", "--epochs", "1", "--batch-size", "4", "--verbose", "0",
            "--out", str(tmp_path / "run")]
    old = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(str(Path(__file__).resolve().parents[2] / "recipes" / "table3.py"), run_name="__main__")
    finally:
        sys.argv = old
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test"]["n"] == 2 and 0.0 <= results["test"]["dice"] <= 1.0
    assert "table3.py" in results["command"] and results["dataset"] == "kvasir"


def test_train_patches_per_image_reaches_training(tmp_path, monkeypatch):
    """`keras-sl train --patches-per-image N` trains on full-resolution patches (window presets, DRIVE)."""
    import keras_sl.training

    calls = []
    monkeypatch.setattr(keras_sl.training, "train_segmentation", lambda *a, **k: calls.append(k))
    base = ["train", "--dataset", "drive", "--data", "d", "--out", str(tmp_path / "run"), "--resolution", "96"]
    assert main(base + ["--patches-per-image", "100"]) == 0
    assert main(base) == 0
    assert calls[0]["patches_per_image"] == 100 and calls[0]["resolution"] == 96
    assert calls[1]["patches_per_image"] is None
