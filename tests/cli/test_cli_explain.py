"""``keras-sl explain``: per image a figure and one .npy map file per method,
explanations.json kept current, a batch that goes on past a bad file, and
one-line errors (unknown layer, bad --methods, unwritable --out, guided
backprop a network cannot run). One tiny preset per module."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_sl import cli
from keras_sl import explain as explaining
from keras_sl.cli import main
from harness import tiny_sl_preset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_explain")
    preset = tiny_sl_preset(root / "preset")
    rng = np.random.default_rng(0)
    images = []
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype("uint8")).save(root / name)
        images.append(str(root / name))
    return {"preset": str(preset), "images": images}


def _error_lines(err: str) -> list[str]:
    lines = err.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("keras-sl explain: error:"))
    return lines[start:]


def test_the_cli_knows_every_method():
    assert cli.EXPLAIN_METHODS == explaining.METHODS


def test_explain_writes_a_figure_and_the_maps_per_image(tiny, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["explain", "--preset", tiny["preset"], "--out", str(out), *tiny["images"]]) == 0
    report = json.loads((out / "explanations.json").read_text())
    assert report["finished"] and not report["failed"] and report["layer"] == "up0"
    assert report["methods"] == list(explaining.METHODS)
    assert [r["image"] for r in report["explanations"]] == tiny["images"]
    for rec, stem in zip(report["explanations"], ("a", "b")):
        assert rec["figure"] == str(out / f"{stem}_explain.png") and rec["lift_depth"] == 4
        assert rec["selected_slices"] == [1, 2] and len(rec["scores"]) == 4
        with Image.open(rec["figure"]) as im:
            assert im.size[0] > 4 * 32
        for method in explaining.METHODS:
            maps = np.load(rec["maps"][method])
            assert rec["maps"][method] == str(out / f"{stem}_{method}.npy")
            assert maps.shape == (4, 32, 32) and maps.dtype == np.float32 and np.isfinite(maps).all()
    printed = capsys.readouterr().out
    assert f"{tiny['images'][0]}: figure {out / 'a_explain.png'}" in printed


def test_a_missing_image_is_one_line_and_the_batch_goes_on(tiny, tmp_path, capsys):
    out, missing = tmp_path / "o", tmp_path / "missing.png"
    code = main(["explain", "--preset", tiny["preset"], "--out", str(out), "--methods", "saliency",
                 str(missing), tiny["images"][0]])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"keras-sl explain: error: {missing}: no such file" in err
    report = json.loads((out / "explanations.json").read_text())
    assert report["finished"] and [f["image"] for f in report["failed"]] == [str(missing)]
    assert sorted(p.name for p in out.iterdir()) == ["a_explain.png", "a_saliency.npy", "explanations.json"]


def test_an_unknown_layer_fails_before_any_image(tiny, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["explain", "--preset", tiny["preset"], "--out", str(out), "--layer", "nope", tiny["images"][0]])
    assert code == 1
    lines = _error_lines(capsys.readouterr().err)
    assert "No layer 'nope'" in lines[0] and "up0" in lines[0] and lines[-1].startswith("hint:")
    assert not list(out.glob("*.npy"))


@pytest.mark.parametrize("value", ["lrp", "saliency,lrp", ","])
def test_bad_methods_are_an_argument_error(tiny, tmp_path, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--preset", tiny["preset"], "--out", str(tmp_path), "--methods", value, tiny["images"][0]])
    assert exit_info.value.code == 2 and "argument --methods" in capsys.readouterr().err


def test_usage_errors_fail_before_the_model_loads(tiny, tmp_path, monkeypatch, capsys):
    import keras_sl.presets

    loads = []
    monkeypatch.setattr(keras_sl.presets, "load_preset", lambda *a, **k: loads.append(a))
    (tmp_path / "a_file").write_text("")
    assert main(["explain", "--preset", tiny["preset"], "--out", str(tmp_path / "a_file"), tiny["images"][0]]) == 2
    assert "--out" in _error_lines(capsys.readouterr().err)[0]
    assert main(["explain", "--preset", tiny["preset"], "--out", str(tmp_path / "o"), "--methods", "saliency",
                 "--layer", "up0", tiny["images"][0]]) == 2
    assert "--layer" in _error_lines(capsys.readouterr().err)[0]
    assert not loads


def test_guided_backprop_a_network_cannot_run(tiny, tmp_path, monkeypatch, capsys):
    """Skipped with a note when it was not asked for by name; a one-line error when it was."""
    monkeypatch.setattr(explaining, "guided_backprop_unsupported", lambda model: "layer x computes its own ReLU")
    out = tmp_path / "o"
    assert main(["explain", "--preset", tiny["preset"], "--out", str(out), tiny["images"][0]]) == 0
    captured = capsys.readouterr()
    assert "guided_backprop skipped: layer x computes its own ReLU" in captured.err
    report = json.loads((out / "explanations.json").read_text())
    assert report["methods"] == ["saliency", "gradcam"] and "guided_backprop" in report["skipped_methods"]
    assert not (out / "a_guided_backprop.npy").exists() and (out / "a_gradcam.npy").is_file()
    code = main(["explain", "--preset", tiny["preset"], "--out", str(tmp_path / "p"), "--methods",
                 "guided_backprop", tiny["images"][0]])
    assert code == 1
    assert "layer x computes its own ReLU" in _error_lines(capsys.readouterr().err)[0]
    assert Path(tmp_path / "p").exists() is False or not list((tmp_path / "p").glob("*.npy"))
