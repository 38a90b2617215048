"""Captured torch inference graphs (keras_sl.models.inference_graph)."""

import shutil
import warnings

import keras
import numpy as np
import pytest

from keras_sl import SLUNet, UNet
from keras_sl.models import inference_graph
from keras_sl.models.inference_graph import CAPTURE_AFTER_CALLS, graph_mode_for

TORCH = keras.backend.backend() == "torch"
needs_torch = pytest.mark.skipif(not TORCH, reason="captured inference graphs exist on the torch backend only")


def _unet(size=32):
    return UNet(2, 3, 1, channels=(8, 16, 32), strides=(2, 2), num_res_units=1, input_shape=(size, size, 3))


def _sl_unet(size=32):
    return SLUNet(levels=3, num_res_units=1, input_shape=(size, size, 3))


def _eager(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_graph_mode_for_backend():
    if not TORCH:
        assert graph_mode_for("auto") is None and graph_mode_for(True) is None
        assert _unet().inference_graph_mode is None
        return
    assert graph_mode_for("auto") == "export"
    assert graph_mode_for(True) == "inductor"
    assert graph_mode_for(False) == "eager"
    assert graph_mode_for("eager") == "eager"
    with pytest.raises(ValueError, match="use True, False, 'auto'"):
        graph_mode_for("fast")


@needs_torch
def test_environment_variable_picks_default(monkeypatch):
    monkeypatch.setenv(inference_graph.ENV_VAR, "eager")
    assert graph_mode_for("auto") == "eager"
    assert _unet().inference_graphs is None
    monkeypatch.setenv(inference_graph.ENV_VAR, "jit")
    with pytest.raises(ValueError, match="KERAS_SL_TORCH_GRAPH='jit'.*use one of"):
        graph_mode_for("auto")


@needs_torch
def test_export_graph_replays_eager_outputs_exactly(rng):
    model = _unet()
    model.compile(jit_compile="auto")
    assert model.jit_compile is False  # Keras' own torch.compile stays off
    x = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    outputs = [keras.ops.convert_to_numpy(model.predict_on_batch(x)) for _ in range(CAPTURE_AFTER_CALLS + 1)]
    graphs = model.inference_graphs
    assert graphs.mode == "export" and len(graphs.graphs) == 1
    assert list(graphs.capture_seconds.values())[0] > 0
    for out in outputs:
        np.testing.assert_array_equal(out, _eager(model, x))


@needs_torch
def test_graph_sees_new_weights_without_recapture(rng):
    model = _unet()
    x = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    for _ in range(CAPTURE_AFTER_CALLS):
        model.predict_on_batch(x)
    graph = next(iter(model.inference_graphs.graphs.values()))
    before = keras.ops.convert_to_numpy(model.predict_on_batch(x))
    model.set_weights([w * 1.5 + 0.01 for w in model.get_weights()])
    after = keras.ops.convert_to_numpy(model.predict_on_batch(x))
    assert next(iter(model.inference_graphs.graphs.values())) is graph
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_array_equal(after, _eager(model, x))


@needs_torch
def test_sl_unet_prediction_graphs_follow_the_model(rng):
    model = _sl_unet()
    x = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    runner = model._inference_model(False)
    assert runner.inference_graph_mode == "export"
    for _ in range(CAPTURE_AFTER_CALLS):
        model.predict(x, verbose=0)
    assert len(runner.inference_graphs.graphs) == 1
    np.testing.assert_array_equal(model.predict(x, verbose=0), _eager(runner, x))
    # The slice selection is a variable of the graph, not a constant.
    model.selected_slices = [0, 2, 4, 6, 8]
    probs = model.predict(x, verbose=0)
    np.testing.assert_array_equal(probs, _eager(runner, x))
    probs_q, q = model.predict_quality(x, verbose=0)
    # The prediction-only graph sums the selected slices inside the last
    # unit's kernel (keras_sl.models.sl_unet.selected_slice_sum): equal up to
    # float rounding, not bit for bit.
    np.testing.assert_allclose(probs_q, probs, atol=1e-5)
    assert q.shape == (2,)
    model.compile(jit_compile=False)
    assert runner.inference_graph_mode == "eager" and runner.inference_graphs is None


@needs_torch
def test_new_shapes_stay_eager_until_seen_twice(rng, monkeypatch):
    monkeypatch.setattr(inference_graph, "MAX_GRAPHS", 2)
    model = _unet(size=None)
    graphs = model.inference_graphs
    for size in (32, 64, 96):
        model.predict_on_batch(np.zeros((1, size, size, 3), "float32"))
    assert not graphs.graphs  # each shape seen once: never captured
    for size in (32, 64, 96):
        x = rng.standard_normal((1, size, size, 3)).astype("float32")
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.predict_on_batch(x)), _eager(model, x))
    assert [key[0] for key in graphs.graphs] == [(1, 64, 64, 3), (1, 96, 96, 3)]  # oldest dropped


@needs_torch
def test_capture_failure_warns_and_runs_eagerly(rng, monkeypatch):
    import torch

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.export, "export", broken)
    model = _unet()
    x = rng.standard_normal((1, 32, 32, 3)).astype("float32")
    model.predict_on_batch(x)
    with pytest.warns(UserWarning, match="could not capture.*unsupported operator.*KERAS_SL_TORCH_GRAPH=eager"):
        out = model.predict_on_batch(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), _eager(model, x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # warned once per signature
        model.predict_on_batch(x)
    assert not model.inference_graphs.graphs


@needs_torch
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="inductor needs a C++ compiler on CPU (none on PATH)")
def test_inductor_graph_matches_eager(rng):
    model = _sl_unet()
    model.compile(jit_compile=True)
    assert model.jit_compile is False
    x = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    runner = model._inference_model(False)
    for _ in range(CAPTURE_AFTER_CALLS):
        model.predict(x, verbose=0)
    assert runner.inference_graphs.mode == "inductor" and len(runner.inference_graphs.graphs) == 1
    np.testing.assert_allclose(model.predict(x, verbose=0), _eager(runner, x), atol=1e-4)


@pytest.mark.parametrize("jit_compile", ["auto", False])
def test_saved_model_keeps_compile_and_requested_mode(tmp_path, jit_compile):
    model = _unet()
    model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
    model.train_on_batch(np.zeros((1, 32, 32, 3), "float32"), np.zeros((1, 32, 32, 1), "float32"))
    path = str(tmp_path / "unet.keras")
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Keras warns when it cannot re-compile
        loaded = keras.saving.load_model(path)
    assert loaded.compiled and loaded.get_compile_config()["jit_compile"] == jit_compile
    if TORCH:
        assert loaded.inference_graph_mode == graph_mode_for(jit_compile)
