"""keras-sl evaluate / predict on depth presets (DepthEstimator, SLDepthEstimator)
and train --resolution HEIGHTxWIDTH. Tiny presets (UNet, channels (4, 4)) and a
fake flat 7-Scenes sequence (10 frames, 48x64) in a temporary folder."""

import json
import math
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import keras_sl
from keras_sl import cli_depth, evaluation_depth
from keras_sl.cli import build_parser, main
from keras_sl.data import IDENTITY

FRAMES, H, W = 10, 48, 64


def _seven_scenes(folder: Path) -> Path:
    """Flat 7-Scenes layout: frame-NNNNNN.color.jpg + frame-NNNNNN.depth.png (uint16 mm, 0 = invalid)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    for i in range(FRAMES):
        rgb = np.stack([xx * 4, yy * 5, np.full_like(xx, 20 * i)], -1) + rng.integers(0, 40, (H, W, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype("uint8")).save(folder / f"frame-{i:06d}.color.jpg")
        depth = (800 + 30 * xx + 200 * i + rng.integers(0, 100, (H, W))).astype("uint16")
        depth[: 3 + i] = 0  # rows without a measurement
        Image.fromarray(depth).save(folder / f"frame-{i:06d}.depth.png")
    return folder


@pytest.fixture(scope="module")
def depth(tmp_path_factory):
    """Tiny SL and 2-D depth presets (and the models they were saved from), the data, a few images."""
    from keras_sl.tasks import DepthEstimator, SLDepthEstimator

    keras.utils.set_random_seed(0)  # the same untrained weights on every run
    root = tmp_path_factory.mktemp("cli_depth")
    meta = {"dataset": "7scenes", "normalization": IDENTITY, "license": "test"}
    net = keras_sl.UNet(3, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1, input_shape=(4, None, None, 3))
    sl = SLDepthEstimator(net, lift_depth=4, num_selected=2)
    twin = DepthEstimator(keras_sl.UNet(2, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1))
    data = _seven_scenes(root / "7scenes")
    odd = root / "odd" / "odd.png"  # a size that is not a multiple of the network stride
    odd.parent.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (37, 50, 3), dtype=np.uint8)).save(odd)
    return {"root": root, "data": str(data), "sl_model": sl, "twin_model": twin,
            "sl": str(sl.save_to_preset(root / "sl", metadata=meta)),
            "twin": str(twin.save_to_preset(root / "twin", metadata=meta)),
            "images": [str(data / "frame-000000.color.jpg"), str(data / "frame-000009.color.jpg"), str(odd)]}


def _dataset(path):
    import keras_sl.datasets

    return keras_sl.datasets.get("7scenes", path)


def _assert_png(path: Path, size=None) -> None:
    assert path.is_file(), path
    with Image.open(path) as im:
        assert im.format == "PNG"
        if size is not None:
            assert im.size == size


# -- evaluate ------------------------------------------------------------------------------------------------
def test_evaluate_sl_depth_preset(depth, tmp_path, monkeypatch, capsys):
    out_json, figs = tmp_path / "eval.json", tmp_path / "figs"
    assert cli_depth.FIGURE_LIMIT == 8 and "first 8 images" in build_parser()._subparsers._group_actions[0].choices[
        "evaluate"].format_help()
    monkeypatch.setattr(cli_depth, "FIGURE_LIMIT", 3)  # figures take time: the cap at 3 of the 5 images
    assert main(["evaluate", "--preset", depth["sl"], "--data", depth["data"], "--split", "all", "--limit", "5",
                 "--json", str(out_json), "--out", str(figs)]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out_json.read_text())
    assert {k: v for k, v in written.items() if k != "per_image"} == printed
    assert printed["task"] == "depth" and printed["dataset"] == "7scenes" and printed["split"] == "all"

    ds = _dataset(depth["data"])
    direct = evaluation_depth.evaluate_depth(depth["sl_model"], ds, ds.split("all")[:5])
    assert set(direct) - {"per_image"} <= set(printed)
    for key in cli_depth.REQUIRED_KEYS:
        assert printed[key] is not None, key
    for key, value in direct.items():
        if key != "per_image":  # NaN (e.g. correlation with a constant delta1 of an untrained model) -> null
            expected = None if math.isnan(value) else pytest.approx(value, rel=1e-5, abs=1e-7)
            assert printed[key] == expected, key
    assert printed["n"] == 5 and 0 <= printed["delta1"] <= printed["delta2"] <= printed["delta3"] <= 1
    assert [r["id"] for r in written["per_image"]] == [f"frame-{i:06d}" for i in range(5)]
    assert [r["rmse"] for r in written["per_image"]] == pytest.approx([r["rmse"] for r in direct["per_image"]])
    assert all(0 < r["q"] <= 1 for r in written["per_image"])

    pytest.importorskip("matplotlib")
    # a figure for each of the first FIGURE_LIMIT of the 5 images, and the Q-vs-RMSE scatter
    names = sorted(p.name for p in figs.glob("depth_*.png"))
    assert names == [f"depth_frame-{i:06d}.png" for i in range(3)]
    for path in [*figs.glob("depth_*.png"), figs / "pqa_scatter.png"]:
        _assert_png(path)
        assert path.stat().st_size > 5000


def test_evaluate_2d_depth_preset(depth, tmp_path, capsys):
    out_json, figs = tmp_path / "eval.json", tmp_path / "figs"
    assert main(["evaluate", "--preset", depth["twin"], "--data", depth["data"], "--limit", "1",
                 "--json", str(out_json), "--out", str(figs)]) == 0
    printed = json.loads(capsys.readouterr().out)
    ds = _dataset(depth["data"])
    test = ds.split("test")
    direct = evaluation_depth.evaluate_depth(depth["twin_model"], ds, test[:1])
    assert printed["rmse"] == pytest.approx(direct["rmse"], rel=1e-5) and printed["n"] == 1
    assert printed["pqa_pearson"] is None and printed["pqa_spearman"] is None  # a 2-D model has no Q
    assert json.loads(out_json.read_text())["per_image"][0]["id"] == test[0].id
    pytest.importorskip("matplotlib")
    assert sorted(p.name for p in figs.iterdir()) == [f"depth_{test[0].id}.png"]  # no scatter without Q


def test_depth_metrics_are_printed_before_the_json_is_written(depth, tmp_path, monkeypatch, capsys):
    def refuse(path, value):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cli_depth, "write_json", refuse)
    monkeypatch.setattr(evaluation_depth, "evaluate_depth", lambda model, ds, samples: {
        "rmse": 0.5, "abs_rel": float("nan"), "n": len(samples), "per_image": []})
    code = main(["evaluate", "--preset", depth["twin"], "--data", depth["data"], "--json", str(tmp_path / "e.json")])
    out, err = capsys.readouterr()
    assert code == 1 and "Permission denied" in err and "Traceback" not in err
    printed = json.loads(out)
    assert printed["rmse"] == 0.5 and printed["abs_rel"] is None and printed["n"] == 2  # the 2 test frames
    assert printed["delta1"] is None and printed["pqa_spearman"] is None  # every required key, null when absent


def test_depth_preset_on_a_segmentation_reader_is_refused(depth, tmp_path, capsys):
    kvasir = tmp_path / "kvasir"
    for sub in ("images", "masks"):
        (kvasir / sub).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), "uint8")).save(kvasir / sub / "a.png")
    code = main(["evaluate", "--preset", depth["twin"], "--data", str(kvasir), "--dataset", "kvasir",
                 "--split", "all"])
    assert code == 2
    err = capsys.readouterr().err
    assert "is a depth model (DepthEstimator) but dataset reader 'kvasir' reads segmentation data" in err


# -- predict -------------------------------------------------------------------------------------------------
def test_predict_sl_depth_preset(depth, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "o"
    images = [depth["images"][0], str(bad), *depth["images"][1:]]
    assert main(["predict", "--preset", depth["sl"], "--out", str(out), *images]) == 1  # the bad file
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"keras-sl predict: error: {bad}:" in err and "1 of 4 image(s) failed" in err

    report = json.loads((out / "predictions.json").read_text())
    assert report["finished"] is True and report["task"] == "depth" and report["q_threshold"] is None
    assert [f["image"] for f in report["failed"]] == [str(bad)]
    records = report["predictions"]
    assert [r["image"] for r in records] == depth["images"]
    stems = ["frame-000000.color", "frame-000009.color", "odd"]
    inputs = [np.asarray(Image.open(path).convert("RGB")) for path in depth["images"]]
    expected, uncertainties, qs = depth["sl_model"].predict_uncertainty(inputs, verbose=0)
    for rec, stem, image, want, uncertainty, q in zip(records, stems, inputs, expected, uncertainties, qs):
        values = np.load(out / f"{stem}_depth.npy")
        assert rec["depth"] == str(out / f"{stem}_depth.npy")
        assert values.dtype == np.float32 and values.shape == image.shape[:2] == (rec["height"], rec["width"])
        np.testing.assert_allclose(values, want[..., 0], rtol=1e-5, atol=1e-6)
        assert rec["q"] == pytest.approx(float(q), rel=1e-5) and 0 < rec["q"] <= 1
        assert rec["depth_min"] == pytest.approx(values.min()) and rec["depth_max"] == pytest.approx(values.max())
        assert rec["depth_median"] == pytest.approx(np.median(values))
        assert rec["uncertainty_mean"] == pytest.approx(float(np.mean(uncertainty)), rel=1e-5)
        assert "low_quality" not in rec  # no threshold for a depth Q unless given
        _assert_png(out / f"{stem}_depth.png", size=image.shape[1::-1])
        _assert_png(out / f"{stem}_uncertainty.png", size=image.shape[1::-1])
        assert rec["depth_png_scale"] == pytest.approx([0.0, max(values.max(), 1e-6)], rel=1e-6)


def test_predict_2d_depth_preset_with_the_presets_q_threshold(depth, tmp_path, monkeypatch):
    preset = tmp_path / "preset"
    shutil.copytree(depth["twin"], preset)
    meta = json.loads((preset / "metadata.json").read_text())
    meta["q_threshold"] = 0.5
    (preset / "metadata.json").write_text(json.dumps(meta))
    out = tmp_path / "o"
    assert main(["predict", "--preset", str(preset), "--out", str(out), depth["images"][2]]) == 0
    report = json.loads((out / "predictions.json").read_text())
    assert report["q_threshold"] == 0.5 and "q_threshold" in report["q_threshold_source"]
    (rec,) = report["predictions"]
    assert "q" not in rec and "uncertainty_png" not in rec and "low_quality" not in rec  # no Q from a 2-D model
    values = np.load(out / "odd_depth.npy")
    assert values.shape == (37, 50) and values.dtype == np.float32
    assert sorted(p.name for p in out.iterdir()) == ["odd_depth.npy", "odd_depth.png", "predictions.json"]

    # an SL-like result (stubbed): flagged by the preset's threshold, a NaN Q always
    results = iter([(2.0, 0.4), (np.nan, float("nan"))])

    def stub(model, images):
        value, q = next(results)
        return [np.full((5, 7, 1), value, "float32")], [np.zeros((5, 7, 1), "float32")], [q]

    monkeypatch.setattr(evaluation_depth, "predict_depth_images", stub)
    out = tmp_path / "o2"
    assert main(["predict", "--preset", str(preset), "--out", str(out), *depth["images"][:2]]) == 0
    first, second = json.loads((out / "predictions.json").read_text())["predictions"]
    assert first["low_quality"] is True and first["q"] == 0.4 and first["depth_median"] == 2.0
    assert second["low_quality"] is True and second["q"] is None and "non-finite" in second["flag_reason"]


def test_predict_depth_missing_files_only(depth, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["predict", "--preset", depth["sl"], "--out", str(out), str(tmp_path / "nothing.png")]) == 1
    report = json.loads((out / "predictions.json").read_text())
    assert report["finished"] is True and report["predictions"] == [] and len(report["failed"]) == 1


# -- figures and PNGs, no model ---------------------------------------------------------------------------------
def test_colorize_scale_and_missing_values(tmp_path):
    from keras_sl.visualize_depth import NO_VALUE_RGB, colorize, save_depth_png

    values = np.array([[0.0, 1.0], [2.0, np.nan]], "float32")
    rgb = colorize(values, 0.0, 2.0, valid=np.array([[True, True], [True, True]]))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 1]) == NO_VALUE_RGB  # NaN
    assert tuple(colorize(values, 0, 2, valid=np.array([[False, True], [True, True]]))[0, 0]) == NO_VALUE_RGB
    assert not np.array_equal(rgb[0, 0], rgb[1, 0])  # the two ends of the scale differ
    np.testing.assert_array_equal(colorize(values * 3, 0.0, 2.0)[1, 0], rgb[1, 0])  # clipped above vmax
    assert save_depth_png(tmp_path / "d.png", values) == (0.0, 2.0)  # the finite maximum
    with Image.open(tmp_path / "d.png") as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), rgb)


def test_depth_figure_and_scatter(tmp_path):
    pytest.importorskip("matplotlib")
    from keras_sl.visualize_depth import save_depth_figure, save_depth_scatter

    rng = np.random.default_rng(0)
    target = rng.uniform(1, 3, (12, 16, 1)).astype("float32")
    target[:2] = 0
    slices = rng.uniform(1, 3, (4, 12, 16, 1))
    path = save_depth_figure(tmp_path / "f.png", rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), target,
                             slices[1:3].mean(0), uncertainty=slices[1:3].std(0), slices=slices, selected=[1, 2],
                             title="t")
    _assert_png(path)
    _assert_png(save_depth_scatter(tmp_path / "s.png", [0.9, 0.8, float("nan"), 0.5], [0.1, 0.2, 0.3, 0.5]))


# -- train --resolution ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [("256", 256), ("192x256", (192, 256)), ("240X320", (240, 320))])
def test_train_resolution_side_or_height_by_width(text, expected, tmp_path, monkeypatch):
    import keras_sl.training

    calls = []
    monkeypatch.setattr(keras_sl.training, "train_segmentation", lambda *a, **k: calls.append(k))
    assert main(["train", "--dataset", "7scenes", "--data", "d", "--out", str(tmp_path / "run"),
                 "--resolution", text]) == 0
    assert calls[0]["resolution"] == expected and type(calls[0]["resolution"]) is type(expected)


@pytest.mark.parametrize("text", ["0", "192x", "x256", "192x256x3", "abc", "-5", "0x256"])
def test_bad_train_resolution_is_an_argument_error(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--dataset", "kvasir", "--data", "d", "--out", "o",
                                   "--resolution", text])
    assert exit_info.value.code == 2 and "argument --resolution" in capsys.readouterr().err


def test_depth_pngs_without_matplotlib(monkeypatch, tmp_path):
    """predict's PNGs do not need matplotlib: a built-in ramp, dark (near) to light (far)."""
    from keras_sl.visualize_depth import DEPTH_CMAP, ERROR_CMAP, _colormap_lut, save_depth_png

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    for cmap in (DEPTH_CMAP, ERROR_CMAP):
        lut = _colormap_lut(cmap).astype("float64")
        lightness = lut @ [0.299, 0.587, 0.114]
        assert lut.shape == (256, 3) and np.all(np.diff(lightness) > -1e-9), cmap
    save_depth_png(tmp_path / "d.png", np.linspace(0, 3, 12, dtype="float32").reshape(3, 4))
    with Image.open(tmp_path / "d.png") as im:
        assert im.size == (4, 3) and im.mode == "RGB"
