"""keras-sl predict / evaluate --window and --tta: the CLI gives exactly what
the Python API gives with the same options, and bad values are argument errors."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

import keras_sl
from keras_sl.cli import main
from keras_sl.data import IDENTITY


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("cli_window_tta")
    net = keras_sl.UNet(3, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1, input_shape=(4, None, None, 3))
    model = keras_sl.SLSegmenter(net, lift_depth=4, num_selected=2)
    preset = model.save_to_preset(root / "preset", metadata={"dataset": "kvasir", "normalization": IDENTITY,
                                                              "license": "test"})
    image = np.random.default_rng(0).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "img.png")
    return {"root": root, "model": model, "preset": str(preset), "image": image, "path": str(root / "img.png")}


@pytest.mark.parametrize("flags, options", [([], {}), (["--window", "16", "--tta", "flips"],
                                                        {"window": 16, "tta": "flips"}),
                                             (["--window", "resize", "--tta", "flips"],
                                              {"window": False, "tta": "flips"})])
def test_predict_q_equals_the_api_with_the_same_options(seg, tmp_path, flags, options):
    out = tmp_path / "out"
    assert main(["predict", "--preset", seg["preset"], "--out", str(out), *flags, seg["path"]]) == 0
    record = json.loads((out / "predictions.json").read_text())["predictions"][0]
    _, q = seg["model"].predict_quality([seg["image"]], verbose=0, **options)
    assert record["q"] == pytest.approx(float(q[0]), abs=1e-6)
    if flags:  # the options change the result: the check above can fail
        _, q_plain = seg["model"].predict_quality([seg["image"]], verbose=0)
        assert abs(float(q_plain[0]) - float(q[0])) > 1e-7


@pytest.mark.parametrize("value", ["8x", "0", "-4", "big"])
def test_a_bad_window_is_an_argument_error(seg, tmp_path, value, capsys):
    code = main(["predict", "--preset", seg["preset"], "--out", str(tmp_path / "o"), "--window", value, seg["path"]])
    assert code == 2
    assert "--window takes" in capsys.readouterr().err
