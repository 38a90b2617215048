"""Short fit, .keras round trip and cross-backend loading, on every backend."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_sl
from keras_sl.callbacks import SliceSelection
from keras_sl.data import make_cells

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(levels=3, lift_depth=4, num_selected=2, input_shape=(32, 32, 3))


def tiny_data(n=8, seed=0):
    return make_cells(n, size=32, seed=seed)


def test_fit_reduces_loss_and_selects_slices():
    keras.utils.set_random_seed(0)
    x, y = tiny_data(8)
    model = keras_sl.SLUNet(**TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    sel = SliceSelection((x, y), verbose=0)
    history = model.fit(x, y, epochs=4, batch_size=4, callbacks=[sel], verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    assert "dice" in history.history
    assert len(model.selected_slices) == 2
    assert np.isfinite(model.slice_losses).all()
    # the stored selection is the argmin of the stored slice losses (eq. 7)
    assert model.selected_slices == sorted(np.argsort(model.slice_losses, kind="stable")[:2].tolist())
    probs = model.predict(x, verbose=0)
    assert probs.shape == (8, 32, 32, 1)
    assert probs.min() >= 0 and probs.max() <= 1


def test_predict_is_sigmoid_of_sum_of_selected_slices():
    x, _ = tiny_data(2)
    model = keras_sl.SLUNet(**TINY)
    model.selected_slices = [1, 3]
    slices = keras.ops.convert_to_numpy(model.predict_slices(x, verbose=0))
    expected = 1 / (1 + np.exp(-(slices[:, 1] + slices[:, 3])))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    probs, q = model.predict_quality(x, verbose=0)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(q, keras.ops.convert_to_numpy(keras_sl.pqa.quality(slices, [1, 3])), atol=1e-6)
    labels = model.segment(x, verbose=0)
    np.testing.assert_array_equal(labels, (expected[..., 0] > 0.5).astype("uint8"))


def test_predict_pads_and_crops_arbitrary_sizes():
    model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2)
    x = np.random.default_rng(0).random((1, 30, 45, 3)).astype("float32")
    assert model.predict(x, verbose=0).shape == (1, 30, 45, 1)
    assert model.predict_slices(x, verbose=0).shape == (1, 4, 30, 45, 1)


def test_channels_first_model_matches_channels_last():
    x, _ = tiny_data(2)
    last = keras_sl.SLUNet(**TINY)
    first = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, input_shape=(3, 32, 32), data_format="channels_first")
    first.set_weights(last.get_weights())
    out_last = last.predict(x, verbose=0)
    out_first = first.predict(np.moveaxis(x, -1, 1), verbose=0)
    np.testing.assert_allclose(np.moveaxis(out_first, 1, -1), out_last, atol=1e-5)


def test_keras_file_round_trip(tmp_path):
    x, y = tiny_data(4)
    model = keras_sl.SLUNet(**TINY)
    model.compile()
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    model.slice_head.set_selected([0, 2], [0.1, 0.9, 0.2, 0.8])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras_sl.SLUNet)
    assert loaded.selected_slices == [0, 2]
    np.testing.assert_allclose(loaded.slice_losses, [0.1, 0.9, 0.2, 0.8], atol=1e-7)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    # compile state restored: training can continue
    loaded.fit(x, y, epochs=1, batch_size=2, verbose=0)


def test_unet_keras_round_trip(tmp_path):
    net = keras_sl.UNet(2, 3, 2, channels=(4, 8), strides=(2,), num_res_units=1)
    x = np.random.default_rng(1).random((1, 16, 16, 3)).astype("float32")
    net.save(tmp_path / "u.keras")
    loaded = keras.models.load_model(tmp_path / "u.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), net.predict(x, verbose=0), atol=1e-5)


SAVER = textwrap.dedent(
    """
    import sys, numpy as np, keras, keras_sl
    out = sys.argv[1]
    keras.utils.set_random_seed(3)
    model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, input_shape=(32, 32, 3))
    model.slice_head.set_selected([1, 2], [0.5, 0.1, 0.2, 0.7])
    x = np.random.default_rng(5).random((2, 32, 32, 3)).astype("float32")
    np.save(out + "/x.npy", x)
    np.save(out + "/probs.npy", model.predict(x, verbose=0))
    np.save(out + "/slices.npy", keras.ops.convert_to_numpy(model.predict_slices(x, verbose=0)))
    model.save(out + "/model.keras")
    model.save_to_preset(out + "/preset")
    """
)


@pytest.mark.parametrize("fmt", ["keras", "preset"])
def test_cross_backend_loading(tmp_path, fmt):
    """Save under another backend in a subprocess, load under this one."""
    here = keras.backend.backend()
    other = "torch" if here == "tensorflow" else "tensorflow"
    env = dict(os.environ, KERAS_BACKEND=other, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", SAVER, str(tmp_path)], check=True, env=env, timeout=300)
    if fmt == "keras":
        model = keras.models.load_model(tmp_path / "model.keras")
    else:
        model = keras_sl.SLUNet.from_preset(str(tmp_path / "preset"))
        assert model.preset_metadata["saved_with_backend"] == other
    x = np.load(tmp_path / "x.npy")
    assert model.selected_slices == [1, 2]
    np.testing.assert_allclose(model.predict(x, verbose=0), np.load(tmp_path / "probs.npy"), atol=1e-4)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.predict_slices(x, verbose=0)), np.load(tmp_path / "slices.npy"), atol=1e-4
    )


def test_compile_defaults_avoid_slow_xla_paths():
    model = keras_sl.SLUNet(**TINY)
    model.compile()
    backend = keras.backend.backend()
    if backend in ("tensorflow", "torch"):
        assert model.jit_compile is False
    assert isinstance(model.loss, keras_sl.losses.SliceSupervision)
    assert isinstance(model.loss.loss, keras_sl.losses.StructureLoss)
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.AdamW)
    assert opt.clipvalue == 0.5
    assert json.loads(json.dumps(model.get_config()))["lift_depth"] == 4
