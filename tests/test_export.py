"""Export to TF SavedModel, ONNX and LiteRT, checked against the Keras model.

Formats the current backend cannot export itself go through a
KERAS_BACKEND=tensorflow subprocess (keras_sl.export); those tests need
TensorFlow installed and take longer.
"""

import importlib.util
import json

import keras
import numpy as np
import pytest

import keras_sl
from keras_sl.cli import main
from keras_sl.export import export_model, native_support, run_export, verify_export

FORMATS = ["savedmodel", "onnx", "litert"]
SUFFIX = {"savedmodel": "", "onnx": ".onnx", "litert": ".tflite"}
BACKEND = keras.backend.backend()
TOL = 1e-4


def _missing(*modules):
    return [m for m in modules if importlib.util.find_spec(m) is None]


def skip_reason(fmt: str) -> str | None:
    """Why ``fmt`` cannot be exported and run here, or None."""
    tools = ["tensorflow"] + (["tf2onnx", "onnx"] if fmt == "onnx" else [])
    missing = _missing(*tools)
    if missing:
        native, why = native_support(fmt)
        route = "natively" if native else f"through a KERAS_BACKEND=tensorflow subprocess ({why})"
        return f"exporting {fmt} {route} needs {', '.join(missing)}: pip install 'keras-sl[tensorflow,export]'"
    if fmt == "onnx" and _missing("onnxruntime"):
        return "running the ONNX export needs onnxruntime: pip install 'keras-sl[export]'"
    if fmt == "litert" and _missing("ai_edge_litert") and _missing("tensorflow"):
        return "running the LiteRT export needs ai-edge-litert (or tensorflow's tf.lite.Interpreter)"
    return None


def _target(tmp_path, fmt, stem="model"):
    return tmp_path / f"{stem}_{fmt}{SUFFIX[fmt]}"


@pytest.fixture(scope="module")
def slunet():
    keras.utils.set_random_seed(0)
    model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, input_shape=(32, 32, 3))
    model.selected_slices = [1, 3]
    return model


@pytest.fixture(scope="module")
def unet():
    keras.utils.set_random_seed(1)
    return keras_sl.UNet(2, 3, 2, channels=(4, 8, 8), strides=(2, 2), num_res_units=1, input_shape=(32, 32, 3))


@pytest.fixture(scope="module")
def images(slunet):
    """Test images whose slice logits stay clear of 0.

    Q thresholds every slice logit at 0: a logit within the runtimes'
    rounding differences (~1e-6) of 0 could flip one pixel and move Q by
    ~1e-3. Of a few random batches, take the one with the largest margin.
    """
    best, margin = None, -1.0
    for seed in range(6):
        x = np.random.default_rng(seed).normal(size=(3, 32, 32, 3)).astype("float32")
        m = float(np.abs(np.asarray(slunet.predict_slices(x, verbose=0))).min())
        if m > margin:
            best, margin = x, m
    assert margin > 1e-5
    return best


@pytest.mark.parametrize("fmt", FORMATS)
def test_slunet_export_matches_keras(fmt, slunet, images, tmp_path):
    reason = skip_reason(fmt)
    if reason:
        pytest.skip(reason)
    path = export_model(slunet, _target(tmp_path, fmt), fmt)
    out = run_export(path, fmt, images)
    assert sorted(out) == ["probabilities", "quality"]
    assert out["probabilities"].shape == (3, 32, 32, 1) and out["quality"].shape == (3,)
    probs, q = slunet.predict_quality(images, verbose=0)
    assert np.abs(out["probabilities"] - probs).max() < TOL
    assert np.abs(out["quality"] - q).max() < TOL
    assert verify_export(slunet, path, fmt, images) < TOL
    # The batch is dynamic: one image goes through the same artifact.
    assert verify_export(slunet, path, fmt, images[:1]) < TOL


@pytest.mark.parametrize("fmt", FORMATS)
def test_unet_export_matches_keras(fmt, unet, images, tmp_path):
    reason = skip_reason(fmt)
    if reason:
        pytest.skip(reason)
    path = export_model(unet, _target(tmp_path, fmt, "unet"), fmt)
    out = run_export(path, fmt, images)
    assert list(out) == [0] and out[0].shape == (3, 32, 32, 2)  # logits, as is
    assert verify_export(unet, path, fmt, images) < TOL


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_export_preset(fmt, slunet, images, tmp_path, capsys):
    reason = skip_reason(fmt)
    if reason:
        pytest.skip(reason)
    preset = slunet.save_to_preset(tmp_path / "preset", metadata={"input_size": [32, 32, 3]})
    out = _target(tmp_path, fmt, "cli")
    no_quality = fmt == "savedmodel"
    argv = ["export", "--preset", str(preset), "--format", fmt, "--out", str(out)]
    assert main(argv + (["--no-quality"] if no_quality else [])) == 0
    assert f"to {out}" in capsys.readouterr().out
    loaded = keras_sl.SLUNet.from_preset(str(preset))
    result = run_export(out, fmt, images)
    assert sorted(result) == (["probabilities"] if no_quality else ["probabilities", "quality"])
    assert verify_export(loaded, out, fmt, images, with_quality=not no_quality) < TOL


def test_litert_needs_tflite_suffix_and_known_format(slunet, tmp_path):
    with pytest.raises(ValueError, match=r"\.tflite"):
        export_model(slunet, tmp_path / "model.bin", "litert")
    with pytest.raises(ValueError, match="Unknown export format"):
        export_model(slunet, tmp_path / "model", "coreml")


def test_litert_needs_fixed_size(tmp_path):
    model = keras_sl.SLUNet(levels=2, lift_depth=4, num_selected=2)
    with pytest.raises(ValueError, match="fixed image size"):
        export_model(model, tmp_path / "m.tflite", "litert")
    with pytest.raises(ValueError, match="multiple of the network stride"):
        export_model(model, tmp_path / "m.tflite", "litert", input_size=(33, 33))


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_fallback_names_the_backend(fmt, slunet, tmp_path):
    native, why = native_support(fmt)
    if native:
        pytest.skip(f"{BACKEND} exports {fmt} itself")
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow"):
        export_model(slunet, _target(tmp_path, fmt), fmt, fallback=False)
    assert why


def test_native_support_table():
    assert native_support("savedmodel", "jax")[0] and native_support("tflite", "tensorflow")[0]
    assert not native_support("onnx", "torch")[0] and not native_support("litert", "jax")[0]
    assert json.dumps(native_support("savedmodel", "torch"))
