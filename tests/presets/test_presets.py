"""Preset save/load, built-in listing, checksum and error handling."""

import http.server
import json
import shutil
import threading
import warnings
import zipfile

import numpy as np
import pytest

import keras_sl
from keras_sl import presets
from keras_sl.data import IDENTITY


@pytest.fixture
def trained_preset(tmp_path):
    model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, input_shape=(32, 32, 3))
    model.slice_head.set_selected([0, 3], [0.1, 0.5, 0.6, 0.2])
    folder = model.save_to_preset(
        tmp_path / "p",
        metadata={"dataset": "unit test", "input_size": [32, 32, 3], "normalization": IDENTITY,
                  "recipe": "pytest", "metrics": {"test_dice": 0.5}, "license": "Apache-2.0"},
    )
    return model, folder


def test_round_trip(trained_preset):
    model, folder = trained_preset
    for name in ("config.json", "model.weights.h5", "metadata.json"):
        assert (folder / name).is_file()
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["selected_slices"] == [0, 3]
    assert meta["weights_sha256"] == presets.sha256_file(folder / "model.weights.h5")
    assert meta["input_size"] == [32, 32, 3] and meta["license"] == "Apache-2.0"
    loaded = keras_sl.SLUNet.from_preset(str(folder))
    assert loaded.selected_slices == [0, 3]
    x = np.random.default_rng(0).random((1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert loaded.preset_metadata["metrics"]["test_dice"] == 0.5


def test_corrupted_weights_are_rejected(trained_preset):
    _, folder = trained_preset
    weights = folder / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        keras_sl.SLUNet.from_preset(str(folder))


def test_mismatching_weights_are_rejected(trained_preset, tmp_path):
    _, folder = trained_preset
    other = keras_sl.SLUNet(levels=4, lift_depth=8, num_selected=2, input_shape=(32, 32, 3))
    other.save_weights(tmp_path / "other.weights.h5")
    shutil.copy(tmp_path / "other.weights.h5", folder / "model.weights.h5")
    meta = json.loads((folder / "metadata.json").read_text())
    meta["weights_sha256"] = presets.sha256_file(folder / "model.weights.h5")
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="different architecture"):
        keras_sl.SLUNet.from_preset(str(folder))


def test_unknown_preset_lists_available_names():
    with pytest.raises(ValueError, match="Built-in presets") as err:
        keras_sl.SLUNet.from_preset("no_such_preset")
    for name in presets.list_presets():
        assert name in str(err.value)


def test_wrong_class(trained_preset):
    _, folder = trained_preset
    with pytest.raises(ValueError, match="SLUNet"):
        keras_sl.UNet.from_preset(str(folder))


def test_builtin_presets_load_offline():
    available = presets.list_presets()
    if not available:
        pytest.skip("no built-in presets in pretrained/ yet")
    for name, meta in available.items():
        cls = getattr(keras_sl, meta["class_name"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = cls.from_preset(name)
        # presets carry no optimizer state, and loading them says nothing about it
        assert not [w for w in caught if "optimizer" in str(w.message)], [str(w.message) for w in caught]
        assert model.count_params() == meta["parameter_count"]
        if "selected_slices" in meta:
            assert model.selected_slices == meta["selected_slices"]


def test_archive_url_download(trained_preset, tmp_path, monkeypatch):
    """The real download path, served from a local HTTP server."""
    model, folder = trained_preset
    monkeypatch.setenv("KERAS_SL_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "www" / "preset.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for f in folder.iterdir():
            z.write(f, f"my_preset/{f.name}")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(archive.parent), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/preset.zip"
        loaded = keras_sl.SLUNet.from_preset(url)
        assert loaded.selected_slices == [0, 3]
        # second call uses the cache
        assert keras_sl.SLUNet.from_preset(url).selected_slices == [0, 3]
        with pytest.raises(OSError, match="Could not download"):
            keras_sl.SLUNet.from_preset(f"http://127.0.0.1:{server.server_port}/missing.zip")
    finally:
        server.shutdown()
        server.server_close()


def _preset_cells(meta, count: int, size: int, seed: int):
    """``count`` synthetic cell images as 8-bit RGB, normalised as the preset says."""
    from keras_sl.data import make_cells

    x, _ = make_cells(count, size, seed=seed)
    return (x * 255).round().astype("uint8")  # raw images: the preset's preprocessor normalises


def _check_sl_reference(model, q_expected, mean_expected, size: int = 256, seed: int = 11, q_atol: float = 3e-3):
    """Q and mean probability of two ``size``² cell images against the values
    recorded with the TensorFlow backend when the preset was made."""
    probs, q = model.predict_quality(_preset_cells(model.preset_metadata, 2, size, seed=seed), verbose=0)
    np.testing.assert_allclose(q, q_expected, atol=q_atol)
    np.testing.assert_allclose(probs.mean(axis=(1, 2, 3)), mean_expected, atol=1e-3)


def _load_sl_preset(name: str, levels: int, num_res_units: int, params: int, selected: list[int]):
    """Load a built-in SL-UNet preset and check its structure against its metadata."""
    model = keras_sl.SLUNet.from_preset(name)
    meta = model.preset_metadata
    assert model.levels == levels and model.num_res_units == num_res_units and model.count_params() == params
    assert model.selected_slices == selected == meta["selected_slices"]
    return model, meta


def test_builtin_demo_preset_reference_output():
    """Built-in preset, loaded offline on this backend, gives the stored outputs."""
    from keras_sl.data import make_cells

    model = keras_sl.SLUNet.from_preset("demo_cells")
    assert model.selected_slices == [2, 5, 6, 9, 13]
    x, _ = make_cells(4, 64, seed=10000)  # first images of the demo's test split
    probs, q = model.predict_quality(x, verbose=0)
    # reference values recorded with the TensorFlow backend when the preset was made
    np.testing.assert_allclose(q, [0.9751, 0.9627, 0.9486, 0.8626], atol=2e-3)
    np.testing.assert_allclose(probs.mean(axis=(1, 2, 3)), [0.17289, 0.18110, 0.16735, 0.08682], atol=1e-3)


def test_builtin_dsb2018_reference_output_and_any_size():
    """The dsb2018 preset (trained on real data) offline on this backend."""
    from PIL import Image

    from keras_sl.data import make_cells
    from keras_sl.evaluation import predict_image

    model = keras_sl.SLUNet.from_preset("dsb2018")
    meta = model.preset_metadata
    assert meta["input_size"] == [96, 96, 3] and meta["metrics"]["test_dice"] > 0.85
    x, _ = make_cells(2, 96, seed=7)
    probs, q = model.predict_quality((x * 255).round().astype("uint8"), verbose=0)  # raw uint8
    # reference values recorded with the TensorFlow backend when the preset was made
    np.testing.assert_allclose(q, [0.8625, 0.8535], atol=2e-3)
    np.testing.assert_allclose(probs.mean(axis=(1, 2, 3)), [0.20591, 0.23270], atol=1e-3)
    # a "full-resolution" image of arbitrary size gives a mask of that size
    big = np.asarray(Image.fromarray((x[0] * 255).astype("uint8")).resize((333, 250)))
    prob, q_big = predict_image(model, big)
    assert prob.shape == (250, 333, 1)
    # the CLI's path and model.predict_quality on a list of raw images are one path
    probs_list, q_list = model.predict_quality([big, (x[1] * 255).astype("uint8")], verbose=0)
    assert [p.shape for p in probs_list] == [(250, 333, 1), (96, 96, 1)]
    np.testing.assert_allclose(probs_list[0], prob, atol=1e-4)  # batch of 2 vs 1: float rounding
    assert abs(q_list[0] - q_big) < 1e-4
    assert abs(q_big - 0.876) < 5e-3 and abs(float(prob.mean()) - 0.22177) < 2e-3


def test_builtin_dsb2018_5l1r_reference_output():
    """The DSB2018 SL-UNet 5L/1Res (Table III row, like-for-like with the UNet 5L/1Res)."""
    model, meta = _load_sl_preset("dsb2018_sl_unet_5l1r", 5, 1, 29537, [1, 3, 11, 13, 14])
    assert meta["input_size"] == [96, 96, 3] and meta["paper"]["dice_table_iii"] == 0.8782
    _check_sl_reference(model, [0.8181, 0.7481], [0.21849, 0.18252], size=96, seed=7, q_atol=2e-3)


def test_builtin_kvasir_reference_output():
    """``SLUNet.from_preset("kvasir")`` offline on this backend, stored outputs."""
    model, meta = _load_sl_preset("kvasir", 8, 2, 69458, [7, 8, 9, 10, 12])
    assert meta["input_size"] == [256, 256, 3] and "Kvasir-SEG" in meta["license"]
    _check_sl_reference(model, [0.8317, 0.4884], [0.05066, 0.00972])
    assert meta["epochs"] == 40 and meta["metrics"]["test_dice"] >= 0.76


def test_builtin_kvasir_5l1r_reference_output():
    """The Kvasir SL-UNet 5L/1Res (Table III row) offline on this backend."""
    model, meta = _load_sl_preset("kvasir_sl_unet_5l1r", 5, 1, 29537, [1, 2, 5, 7, 14])
    assert meta["epochs"] == 40 and meta["metrics"]["test_dice"] > 0.52 and meta["paper"]["dice_table_iii"] == 0.5235
    _check_sl_reference(model, [0.8304, 0.7438], [0.21392, 0.14335])


def test_builtin_kvasir_5l2r_reference_output():
    """The Kvasir SL-UNet 5L/2Res (Table III row) offline on this backend."""
    model, meta = _load_sl_preset("kvasir_sl_unet_5l2r", 5, 2, 38222, [8, 9, 10, 13, 14])
    assert meta["epochs"] == 40 and meta["metrics"]["pqa_pearson"] > 0.71 and meta["paper"]["dice_table_iii"] == 0.695
    _check_sl_reference(model, [0.8753, 0.9234], [0.11931, 0.11200])


def test_builtin_kvasir_8l1r_reference_output():
    """The Kvasir SL-UNet 8L/1Res (Table III row) offline on this backend."""
    model, meta = _load_sl_preset("kvasir_sl_unet_8l1r", 8, 1, 55562, [3, 4, 8, 11, 12])
    assert meta["epochs"] == 40 and meta["paper"]["dice_table_iii"] == 0.5749
    _check_sl_reference(model, [0.8510, 0.7073], [0.08469, 0.06752])


def test_builtin_kvasir_unet_baseline_reference_output():
    """The 2-D UNet 5L/1Res trained with the same Kvasir recipe (Table III baseline)."""
    model = keras_sl.Segmenter.from_preset("kvasir_unet_5l1r")
    meta = model.preset_metadata
    assert isinstance(model.backbone, keras_sl.UNet) and model.count_params() == 3352215 and meta["epochs"] == 40 and meta["input_size"] == [256, 256, 3]
    assert meta["paper"]["dice_table_iii"] == 0.5262 and "Kvasir-SEG" in meta["license"]
    probs = np.asarray(model.predict(_preset_cells(meta, 2, 256, seed=11), verbose=0))
    # reference values recorded with the TensorFlow backend when the preset was made
    np.testing.assert_allclose(probs.mean(axis=(1, 2, 3)), [0.18659, 0.13094], atol=1e-3)


def test_builtin_kvasir_effnetlite0_sl_unet_8l2r_reference_output():
    """SL-UNet decoder 8L/2Res on EfficientNet-Lite0 (ImageNet, frozen): the decoder-zoo preset."""
    model = keras_sl.SLSegmenter.from_preset("kvasir_effnetlite0_sl_unet_8l2r")
    meta = model.preset_metadata
    assert isinstance(model.backbone, keras_sl.PyramidNetwork)
    assert isinstance(model.backbone.encoder, keras_sl.EfficientNetLiteBackbone)
    assert model.count_params() == meta["parameter_count"] == 3079178
    assert model.selected_slices == meta["selected_slices"] == [2, 5, 10, 11, 13]
    assert meta["metrics"]["test_dice"] >= 0.82 and "Apache-2.0" in meta["encoder_weights"]
    _check_sl_reference(model, [0.97119, 0.93079], [0.04035, 0.08945])


def test_builtin_dsb2018_effnetlite0_sl_emcad_reference_output():
    """SL-EMCAD on EfficientNet-Lite0 (ImageNet, frozen): the best DSB2018 SL decoder of the zoo."""
    model = keras_sl.SLSegmenter.from_preset("dsb2018_effnetlite0_sl_emcad")
    meta = model.preset_metadata
    assert isinstance(model.backbone.encoder, keras_sl.EfficientNetLiteBackbone) and model.backbone.lifts_input
    assert model.count_params() == meta["parameter_count"] == 3246086
    assert model.selected_slices == meta["selected_slices"] == [1, 2, 4, 5, 6]
    assert meta["metrics"]["test_dice"] > 0.85 and "Apache-2.0" in meta["encoder_weights"]
    _check_sl_reference(model, [0.82373, 0.84690], [0.05879, 0.15923], size=128)


def test_builtin_kvasir_effnetlite0_unet_8l2r_reference_output():
    """The 2-D twin: UNet decoder 8L/2Res on the same frozen EfficientNet-Lite0, same recipe."""
    model = keras_sl.Segmenter.from_preset("kvasir_effnetlite0_unet_8l2r")
    meta = model.preset_metadata
    assert isinstance(model.backbone, keras_sl.PyramidNetwork) and not model.backbone.lifts_input
    assert model.count_params() == meta["parameter_count"] == 15646696 and meta["epochs"] == 20
    probs = np.asarray(model.predict(_preset_cells(meta, 2, 256, seed=11), verbose=0))
    # reference values recorded with the TensorFlow backend when the preset was made
    np.testing.assert_allclose(probs.mean(axis=(1, 2, 3)), [0.07537, 0.11519], atol=1e-3)


def _check_drive_preset(model, meta):
    """A DRIVE preset predicts by 96x96 windows (overlap 0.5, Gaussian) and records the vessel metrics."""
    pre = model.preprocessor
    assert pre.image_size is None and pre.inference == "window" and list(pre.window_size) == [96, 96]
    assert pre.window_overlap == 0.5 and pre.window_blend == "gaussian"
    assert meta["dataset"] == "drive" and "sliding windows of 96x96" in meta["inference"]
    assert meta["metrics"]["test_region"] == "fov" and "official" in meta["split"]
    assert {"test_dice", "test_auc", "test_sensitivity", "test_specificity", "test_accuracy",
            "test_pooled"} <= set(meta["metrics"])
    assert "DRIVE" in meta["license"] and meta["human_reference"]["metrics"]["test_dice"] > 0.78


def test_builtin_drive_reference_output():
    """``SLUNet.from_preset("drive")``: the DRIVE vessel SL-UNet 5L/2Res, whole images by windows, offline."""
    model, meta = _load_sl_preset("drive", 5, 2, 38222, [5, 7, 8, 9, 10])
    _check_drive_preset(model, meta)
    assert meta["metrics"]["test_dice"] >= 0.78  # the target
    # 160x160: windows at 0 and 64 on each axis; reference values recorded with the TensorFlow backend
    probs, q = model.predict_quality(_preset_cells(meta, 2, 160, seed=11), verbose=0)
    assert probs.shape == (2, 160, 160, 1)
    np.testing.assert_allclose(q, [0.81502, 0.55950], atol=2e-3)
    np.testing.assert_allclose(probs.mean(axis=(1, 2, 3)), [0.06752, 0.01130], atol=1e-3)


def test_builtin_drive_sl_unet_5l1r_reference_output():
    """The DRIVE SL-UNet 5L/1Res, like-for-like with drive_unet_5l1r."""
    model, meta = _load_sl_preset("drive_sl_unet_5l1r", 5, 1, 29537, [5, 8, 9, 10, 11])
    _check_drive_preset(model, meta)
    probs, q = model.predict_quality(_preset_cells(meta, 2, 160, seed=11), verbose=0)
    np.testing.assert_allclose(q, [0.74749, 0.81823], atol=2e-3)
    np.testing.assert_allclose(probs.mean(axis=(1, 2, 3)), [0.08296, 0.19092], atol=1e-3)


def test_builtin_drive_unet_5l1r_reference_output():
    """The DRIVE 2-D twin: UNet 5L/1Res, same recipe, same windows."""
    model = keras_sl.Segmenter.from_preset("drive_unet_5l1r")
    meta = model.preset_metadata
    assert isinstance(model.backbone, keras_sl.UNet) and model.count_params() == meta["parameter_count"] == 3352215
    _check_drive_preset(model, meta)
    probs = np.asarray(model.predict(_preset_cells(meta, 2, 160, seed=11), verbose=0))
    np.testing.assert_allclose(probs.mean(axis=(1, 2, 3)), [0.04706, 0.08381], atol=1e-3)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("name", ["drive", "drive_sl_unet_5l1r", "drive_unet_5l1r"])
def test_builtin_drive_evaluate_equals_metadata(name, tmp_path):
    """`keras-sl evaluate --preset NAME --data DRIVE --split test` gives the metadata's FOV metrics (a few pixels
    at the 0.5 threshold may flip between the training process and a fresh load: <= 1e-5)."""
    import json
    from pathlib import Path

    from keras_sl.cli import main

    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "drive"
    if not data.is_dir():
        pytest.skip(f"DRIVE is not at {data}")
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--preset", name, "--data", str(data), "--split", "test", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    metrics = presets.load_preset(name).preset_metadata["metrics"]
    assert got["n"] == 20 and got["region"] == "fov"
    for key in ("dice", "iou", "auc", "sensitivity", "specificity", "accuracy"):
        assert abs(got[key] - metrics[f"test_{key}"]) <= 1e-5, key
        assert abs(got["pooled"][key] - metrics["test_pooled"][key]) <= 1e-5, key
    if "pqa_pearson" in metrics:
        assert abs(got["pqa_pearson"] - metrics["pqa_pearson"]) <= 5e-4
