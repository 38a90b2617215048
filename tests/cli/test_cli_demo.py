"""The keras-sl CLI: profile, presets and a shortened demo run."""

import json

import numpy as np

import keras_sl
from keras_sl.cli import main


def test_profile_prints_table_ii(capsys, tmp_path):
    out = tmp_path / "t2.json"
    assert main(["profile", "--resolution", "512", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "13.7245" in text and "6.0206" in text
    rows = json.loads(out.read_text())["rows"]
    sl = [r for r in rows if r["model"] == "sl_unet" and r["levels"] == 5 and r["num_res_units"] == 2][0]
    assert sl["params"] == 38222 and round(sl["gmacs"], 4) == 7.0719


def test_presets_command(capsys):
    assert main(["presets"]) == 0
    assert capsys.readouterr().out.strip()


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--size", "32", "--train", "16", "--test", "8", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["test_dice"] <= 1.0
    assert len(results["selected_slices"]) == 5
    assert (out / "demo.png").stat().st_size > 1000
    model = keras_sl.SLUNet.from_preset(str(out / "preset"))
    assert model.selected_slices == results["selected_slices"]
    meta = model.preset_metadata
    assert meta["recipe"].startswith("keras-sl demo") and meta["input_size"] == [32, 32, 3]
    assert np.isfinite(meta["metrics"]["test_dice"])
