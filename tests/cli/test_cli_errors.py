"""keras-sl on bad inputs: one line and a hint (``--debug``: the traceback),
exit codes, a batch that goes on past a bad file, unique mask names,
predictions.json kept current, output paths checked before the work, NaN Q
flagged, and evaluate's risk–coverage report. One tiny preset per module."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_sl import evaluation
from keras_sl.cli import main
from keras_sl.data import make_cells
from harness import tiny_sl_preset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny SL-UNet preset, a tiny Kvasir-layout dataset and three images."""
    root = tmp_path_factory.mktemp("cli_errors")
    preset = tiny_sl_preset(root / "preset")
    x, y = make_cells(6, size=32, seed=3)
    data = root / "kvasir"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(6):
        Image.fromarray((x[i] * 255).astype("uint8")).save(data / "images" / f"id{i:02d}.png")
        Image.fromarray((y[i, ..., 0] * 255).astype("uint8")).save(data / "masks" / f"id{i:02d}.png")
    images = sorted((data / "images").iterdir())
    return {"root": root, "preset": str(preset), "data": str(data), "images": [str(p) for p in images]}


def _error_lines(err: str, command: str) -> list[str]:
    """keras-sl's own lines of stderr (a backend may print notes of its own)."""
    lines = err.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"keras-sl {command}: error:"))
    return lines[start:]


def _assert_one_line_and_hint(err: str, command: str, *expected: str) -> None:
    assert "Traceback" not in err, err
    lines = _error_lines(err, command)
    assert lines[-1].startswith("hint:") and "--debug" in lines[-1], lines
    for text in expected:
        assert text in lines[0], lines


# -- output names ----------------------------------------------------------------------------------------------
def test_same_stem_images_get_their_own_masks(tiny, tmp_path):
    """Bad 4: a/cell.png and b/cell.png used to write one mask twice."""
    for folder, source in (("a", tiny["images"][0]), ("b", tiny["images"][1])):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "cell.png").write_bytes(Path(source).read_bytes())
    inputs = [str(tmp_path / "a" / "cell.png"), str(tmp_path / "b" / "cell.png")]
    out = tmp_path / "o"
    assert main(["predict", "--preset", tiny["preset"], "--out", str(out), *inputs]) == 0
    records = json.loads((out / "predictions.json").read_text())["predictions"]
    assert [r["image"] for r in records] == inputs
    masks = [r["mask"] for r in records]
    assert len(set(masks)) == 2 and all(Path(m).is_file() for m in masks)
    assert sorted(Path(m).name for m in masks) == ["a__cell_mask.png", "b__cell_mask.png"]
    assert sorted(p.name for p in out.glob("*.png")) == ["a__cell_mask.png", "b__cell_mask.png"]


# -- user errors: one line and a hint --------------------------------------------------------------------------
def test_unknown_preset_is_one_line(tiny, tmp_path, capsys):
    code = main(["predict", "--preset", "no_such_preset", "--out", str(tmp_path / "o"), tiny["images"][0]])
    assert code == 1
    _assert_one_line_and_hint(capsys.readouterr().err, "predict", "Unknown preset 'no_such_preset'")


def test_debug_shows_the_traceback(tiny, tmp_path):
    with pytest.raises(ValueError, match="Unknown preset"):
        main(["--debug", "predict", "--preset", "no_such_preset", "--out", str(tmp_path / "o"), tiny["images"][0]])
    with pytest.raises(ValueError, match="Unknown preset"):  # also after the command
        main(["evaluate", "--preset", "no_such_preset", "--data", tiny["data"], "--debug"])


def test_missing_data_folder_is_one_line(tiny, tmp_path, capsys):
    code = main(["evaluate", "--preset", tiny["preset"], "--data", str(tmp_path / "nowhere")])
    assert code == 1
    _assert_one_line_and_hint(capsys.readouterr().err, "evaluate", "does not exist")


def test_unreadable_image_is_one_line(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["predict", "--preset", tiny["preset"], "--out", str(tmp_path / "o"), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"keras-sl predict: error: {bad}: cannot identify image file" in err


@pytest.mark.parametrize("option, value", [("--limit", "0"), ("--limit", "-3"), ("--limit", "two")])
def test_bad_limit_is_an_argument_error(tiny, option, value, capsys):
    """``--limit 0`` used to evaluate everything."""
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--preset", tiny["preset"], "--data", tiny["data"], option, value])
    assert exit_info.value.code == 2
    assert f"argument {option}: must be" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "high"])
def test_bad_q_threshold_is_an_argument_error(tiny, tmp_path, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--preset", tiny["preset"], "--out", str(tmp_path / "o"), "--q-threshold", value,
              tiny["images"][0]])
    assert exit_info.value.code == 2 and "argument --q-threshold" in capsys.readouterr().err


# -- output paths, checked before the work -----------------------------------------------------------------------
@pytest.fixture
def no_evaluation(monkeypatch):
    calls = []
    monkeypatch.setattr(evaluation, "evaluate_segmentation", lambda *a, **k: calls.append(a) or {})
    return calls


@pytest.mark.parametrize("option", ["--json", "--out"])
def test_unwritable_evaluate_outputs_fail_before_the_evaluation(tiny, tmp_path, option, no_evaluation, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = main(["evaluate", "--preset", tiny["preset"], "--data", tiny["data"], option,
                 str(blocker / "sub" / "eval.json")])
    assert code == 2 and not no_evaluation
    _assert_one_line_and_hint(capsys.readouterr().err, "evaluate", option, "is a file, not a folder")


def test_json_path_that_is_a_folder_fails_at_once(tiny, tmp_path, no_evaluation, capsys):
    assert main(["evaluate", "--preset", tiny["preset"], "--data", tiny["data"], "--json", str(tmp_path)]) == 2
    assert not no_evaluation
    _assert_one_line_and_hint(capsys.readouterr().err, "evaluate", "is a folder")


def test_unwritable_predict_out_fails_before_the_model_loads(tiny, tmp_path, monkeypatch, capsys):
    import keras_sl.presets

    loads = []
    monkeypatch.setattr(keras_sl.presets, "load_preset", lambda *a, **k: loads.append(a))
    (tmp_path / "a_file").write_text("")
    assert main(["predict", "--preset", tiny["preset"], "--out", str(tmp_path / "a_file"), tiny["images"][0]]) == 2
    assert not loads
    _assert_one_line_and_hint(capsys.readouterr().err, "predict", "--out", "is a file")


def test_metrics_are_printed_before_the_json_is_written(tiny, tmp_path, monkeypatch, capsys):
    """A write that fails after the evaluation loses no metric: they are on stdout."""
    import keras_sl.cli

    def refuse(path, value):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(keras_sl.cli, "write_json", refuse)
    monkeypatch.setattr(evaluation, "evaluate_segmentation", lambda model, ds, samples: {
        "dice": 0.5, "n": len(samples), "aurc": float("nan"), "per_image": []})
    code = main(["evaluate", "--preset", tiny["preset"], "--data", tiny["data"], "--split", "all", "--limit", "3",
                 "--json", str(tmp_path / "eval.json")])
    out, err = capsys.readouterr()
    assert code == 1
    assert json.loads(out) == {"dice": 0.5, "n": 3, "aurc": None, "preset": tiny["preset"], "dataset": "kvasir",
                               "split": "all"}  # strict JSON: NaN printed as null
    _assert_one_line_and_hint(err, "evaluate", "Permission denied")


# -- a batch of images -----------------------------------------------------------------------------------------
def test_a_batch_goes_on_past_bad_files(tiny, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    missing = tmp_path / "missing.png"
    good = tiny["images"][:2]
    out = tmp_path / "o"
    code = main(["predict", "--preset", tiny["preset"], "--out", str(out), good[0], str(bad), str(missing), good[1]])
    assert code == 1
    report = json.loads((out / "predictions.json").read_text())
    assert [r["image"] for r in report["predictions"]] == good
    assert all(Path(r["mask"]).is_file() for r in report["predictions"])
    assert sorted(f["image"] for f in report["failed"]) == sorted([str(bad), str(missing)])
    assert report["finished"] is True
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert sum(line.startswith("keras-sl predict: error:") for line in err.splitlines()) == 2
    assert "2 of 4 image(s) failed" in err


def test_predictions_json_is_current_after_every_image(tiny, tmp_path, monkeypatch):
    """An interruption after the first image keeps its Q in predictions.json."""
    real = evaluation.predict_image
    calls = []

    def interrupt_second(model, image):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, image)

    monkeypatch.setattr(evaluation, "predict_image", interrupt_second)
    out = tmp_path / "o"
    try:
        code = main(["predict", "--preset", tiny["preset"], "--out", str(out), *tiny["images"][:3]])
    except KeyboardInterrupt:
        code = "KeyboardInterrupt raised"
    assert code == 130  # 128 + SIGINT, with "interrupted" on stderr
    report = json.loads((out / "predictions.json").read_text())
    assert report["finished"] is False
    assert [r["image"] for r in report["predictions"]] == tiny["images"][:1]
    assert 0.0 <= report["predictions"][0]["q"] <= 1.0


# -- the flag --------------------------------------------------------------------------------------------------
def test_nan_quality_is_flagged(tiny, tmp_path, monkeypatch):
    """A non-finite prediction (Q = NaN) must never pass the threshold; the JSON stays strict."""
    monkeypatch.setattr(evaluation, "predict_image",
                        lambda model, image: (np.full((*image.shape[:2], 1), np.nan, "float32"), float("nan")))
    out = tmp_path / "o"
    assert main(["predict", "--preset", tiny["preset"], "--out", str(out), "--q-threshold", "0.5",
                 tiny["images"][0]]) == 0
    text = (out / "predictions.json").read_text()
    rec = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))["predictions"][0]
    assert rec["low_quality"] is True and rec["q"] is None and "non-finite" in rec["flag_reason"]


def test_predict_uses_the_presets_q_threshold(tiny, tmp_path, monkeypatch):
    preset = tmp_path / "preset"
    shutil.copytree(tiny["preset"], preset)
    meta = json.loads((preset / "metadata.json").read_text())
    meta["q_threshold"] = 1.5  # above any Q: every image flagged
    (preset / "metadata.json").write_text(json.dumps(meta))
    out = tmp_path / "o"
    monkeypatch.setattr(evaluation, "predict_image",
                        lambda model, image: (np.zeros((*image.shape[:2], 1), "float32"), 0.99))
    assert main(["predict", "--preset", str(preset), "--out", str(out), tiny["images"][0]]) == 0
    report = json.loads((out / "predictions.json").read_text())
    assert report["q_threshold"] == 1.5 and "q_threshold" in report["q_threshold_source"]
    assert report["predictions"][0]["low_quality"] is True


# -- selective prediction in evaluate ---------------------------------------------------------------------------
def test_evaluate_reports_risk_coverage(tiny, tmp_path):
    out_json = tmp_path / "eval.json"
    assert main(["evaluate", "--preset", tiny["preset"], "--data", tiny["data"], "--split", "all",
                 "--json", str(out_json), "--out", str(tmp_path / "figs")]) == 0
    result = json.loads(out_json.read_text())
    for key in ("aurc", "aurc_random", "aurc_oracle"):
        assert 0.0 <= result[key] <= 1.0
    assert result["aurc_oracle"] <= result["aurc"] + 1e-12
    assert set(result["dice_at_coverage"]) == {"0.8", "0.9"}
    risk = 1 - np.array([r["dice"] for r in result["per_image"]])
    assert result["aurc_random"] == pytest.approx(risk.mean())
    pytest.importorskip("matplotlib")
    assert (tmp_path / "figs" / "risk_coverage.png").stat().st_size > 1000


# -- the pieces, without a model -------------------------------------------------------------------------------
@pytest.mark.parametrize("paths, expected", [
    (["a/cell.png", "b/cell.png"], ["a__cell", "b__cell"]),
    (["x/a/cell.png", "y/a/cell.png", "z.png"], ["x__a__cell", "y__a__cell", "z"]),
    (["d/cell.png", "d/cell.jpg"], ["cell_png", "cell_jpg"]),
    (["d/cell.png", "d/cell.png"], ["cell_png", "cell_png_2"]),  # the same file twice: two outputs
    (["a/Cell.png", "b/cell.png"], ["a__Cell", "b__cell"]),  # case-insensitive file systems
    (["one.png", "two.png"], ["one", "two"]),
])
def test_unique_stems(paths, expected):
    from keras_sl.cli_files import unique_stems

    assert unique_stems(paths) == expected


def test_report_format(capsys):
    from keras_sl.cli_errors import report

    report("evaluate", FileNotFoundError("kvasir: /d does not exist. Arrange the files as:\n  <root>/images/<id>.jpg"))
    report("train", FloatingPointError("loss became NaN at epoch 3"))
    report("evaluate", PermissionError(13, "Permission denied", "/x/eval.json"))
    lines = capsys.readouterr().err.splitlines()
    assert lines[:3] == ["keras-sl evaluate: error: kvasir: /d does not exist. Arrange the files as:",
                         "    <root>/images/<id>.jpg",
                         "hint: check the path; add --debug to see the traceback"]
    assert lines[3] == "keras-sl train: error: loss became NaN at epoch 3" and "learning rate" in lines[4]
    assert lines[5] == "keras-sl evaluate: error: /x/eval.json: Permission denied"
    assert lines[6].startswith("hint: choose a path you can write to")
