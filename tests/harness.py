"""Standard tests a keras_sl layer or task gets in a few lines (like keras-hub's TestCase).

Example::

    from harness import run_task_tests

    def test_my_family(tmp_path):
        run_task_tests(lambda: MySegmenter(...), raw_images, tmp_path)
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _outputs(model, images):
    """What a task predicts for raw images (probabilities, plus Q for SL tasks)."""
    if hasattr(model, "predict_quality"):
        probs, q = model.predict_quality(images, verbose=0)
        return [np.asarray(probs), np.asarray(q)]
    return [np.asarray(model.predict(images, verbose=0))]


def _assert_same(a, b, atol, what):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=atol, err_msg=what)


def run_layer_test(layer, input_shape, expected_output_shape=None, atol: float = 1e-6):
    """Call, ``compute_output_shape``, config round trip (same outputs after
    copying the weights) for a layer on this backend."""
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    shape = tuple(layer.compute_output_shape(input_shape))
    assert tuple(y.shape) == shape, (y.shape, shape)
    if expected_output_shape is not None:
        assert tuple(y.shape) == tuple(expected_output_shape)
    clone = type(layer).from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), y, atol=atol)
    return y


def run_task_tests(make_model, images, tmp_path, atol: float = 1e-5, cross_backend: bool = False):
    """Config, ``.keras`` and preset round trips of a task on raw ``images``:
    each reload predicts what the original does and keeps its preprocessor.
    ``cross_backend=True`` also loads the preset saved here under the other
    backends (subprocesses; slow)."""
    model = make_model()
    ref = _outputs(model, images)

    clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    _assert_same(_outputs(clone, images), ref, atol, "config round trip")
    assert clone.preprocessor == model.preprocessor

    path = Path(tmp_path) / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    _assert_same(_outputs(loaded, images), ref, atol, ".keras round trip")
    assert loaded.preprocessor == model.preprocessor

    preset = Path(tmp_path) / "preset"
    model.save_to_preset(preset)
    restored = type(model).from_preset(preset)
    _assert_same(_outputs(restored, images), ref, atol, "preset round trip")
    assert restored.preprocessor == model.preprocessor

    if cross_backend:
        np.save(Path(tmp_path) / "images.npy", np.asarray(images))
        for backend in ("tensorflow", "jax", "torch"):
            if backend == keras.backend.backend():
                continue
            out = Path(tmp_path) / f"{backend}.npz"
            code = textwrap.dedent(f"""
                import numpy as np, keras_sl
                from keras_sl.presets import load_preset
                m = load_preset({str(preset)!r})
                x = np.load({str(Path(tmp_path) / 'images.npy')!r})
                outs = [m.predict_quality(x, verbose=0)] if hasattr(m, 'predict_quality') else [[m.predict(x, verbose=0)]]
                np.savez({str(out)!r}, *[np.asarray(o) for o in outs[0]])
            """)
            env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
            subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=600)
            with np.load(out) as got:
                _assert_same([got[k] for k in sorted(got.files)], ref, 1e-4, f"preset loaded on {backend}")
    return model, ref


def tiny_sl_preset(folder, dataset: str = "kvasir"):
    """A tiny untrained SL-UNet (3 levels, lift depth 4, 2 selected slices) saved as a preset in ``folder``,
    with the metadata of a 32x32 identity-normalised ``dataset`` preset; returns the folder."""
    import keras_sl
    from keras_sl.data import IDENTITY

    return keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2).save_to_preset(
        folder, metadata={"dataset": dataset, "input_size": [32, 32, 3], "normalization": IDENTITY,
                          "license": "test"})


def metadata(preset_dir) -> dict:
    return json.loads((Path(preset_dir) / "metadata.json").read_text())


@contextlib.contextmanager
def shapes_only():
    """Build models whose variables are never initialised (MAC and parameter counts read shapes only)."""
    from keras.src.backend.common import global_state

    pending = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)


def forward_numpy(model, inputs):
    """``model(inputs)`` with every output as NumPy (same structure). On JAX the graph runs as one jitted
    stateless call: one XLA compilation instead of one per operation (a fixture decoder: 26 s -> 7 s)."""
    if keras.backend.backend() != "jax":
        return keras.tree.map_structure(lambda y: np.asarray(keras.ops.convert_to_numpy(y)), model(inputs))
    import jax

    call = jax.jit(lambda t, n, x: model.stateless_call(t, n, x)[0])
    out = call([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
               inputs)
    return keras.tree.map_structure(np.asarray, out)
