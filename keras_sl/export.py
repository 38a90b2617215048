"""Export keras_sl models for serving: TF SavedModel, ONNX and LiteRT.

An :class:`~keras_sl.SLUNet` is exported as its *inference graph*, not as
the per-slice logits it returns when called: the exported artifact maps a
float32 image batch ``(batch, H, W, C)`` to a dict of

* ``probabilities`` -- ``act(sum of the selected slices' logits)`` (eq. 9),
  ``(batch, H, W, K)``;
* ``quality`` -- the PQA score Q (eq. 11), ``(batch,)``; left out with
  ``with_quality=False``.

A :class:`~keras_sl.UNet` (or any other Keras model) is exported as is: its
single output (logits for a UNet). The input is named ``image``; the batch
size is dynamic in all three formats; ``H`` and ``W`` are fixed to the
preset's input size when it is known (``input_size`` argument, the model's
input shape, or ``preset_metadata["input_size"]``), otherwise left dynamic
(SavedModel, ONNX) -- LiteRT needs them fixed. The exported graph expects
*normalised* images: apply the preset's ``normalization`` (see
``keras_sl.data.normalization.normalize``) before feeding it.

Backends. Keras' own ``Model.export`` does the work where the current
backend can export the format well:

============  ===================  =============================================
format        exported natively    otherwise
============  ===================  =============================================
savedmodel    tensorflow, jax      torch: Keras needs ``torch_xla``
onnx          tensorflow           jax: needs ``jax2onnx`` (pulls flax, orbax,
                                   tensorstore); torch: ``torch.onnx`` writes
                                   an invalid graph for the slice selection
                                   (``ops.take`` becomes an ONNX ``Squeeze`` of
                                   a non-unit axis) and has no dynamic batch
litert        tensorflow           jax: no Keras exporter; torch: needs
                                   ``litert-torch`` (pulls transformers, torchao)
============  ===================  =============================================

For the "otherwise" cases :func:`export_model` transparently re-runs the
export in a subprocess with ``KERAS_BACKEND=tensorflow``: the model is saved
as a preset folder (config + weights, slice selection included; backend
independent), loaded there and exported. This needs TensorFlow installed
(``pip install "keras-sl[tensorflow,export]"``); pass ``fallback=False`` to
get an error naming the backend to use instead.

Example::

    import keras_sl
    from keras_sl.export import export_model, verify_export

    model = keras_sl.SLUNet.from_preset("kvasir")
    export_model(model, "kvasir.onnx", "onnx")          # probabilities + Q
    export_model(model, "kvasir.tflite", "litert", with_quality=False)
    # max |Keras - ONNX Runtime| on a batch x:
    verify_export(model, "kvasir.onnx", "onnx", x)

or from the shell: ``keras-sl export --preset kvasir --format onnx --out kvasir.onnx``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: Export formats and the Keras ``Model.export`` format each maps to.
FORMATS = {"savedmodel": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
_ALIASES = {"tf_saved_model": "savedmodel", "saved_model": "savedmodel", "tflite": "litert"}

#: Backends whose ``Model.export`` is used directly for each format.
NATIVE_BACKENDS = {"savedmodel": ("tensorflow", "jax"), "onnx": ("tensorflow",), "litert": ("tensorflow",)}

_WHY_NOT = {
    ("savedmodel", "torch"): "Keras exports SavedModels from the torch backend only through torch_xla",
    ("onnx", "jax"): "Keras' JAX ONNX exporter needs jax2onnx, which pulls flax, orbax and tensorstore",
    ("onnx", "torch"): (
        "torch.onnx writes an invalid graph for the SL-UNet slice selection (ops.take becomes an ONNX "
        "Squeeze of a non-unit axis) and cannot keep the batch dynamic"
    ),
    ("litert", "jax"): "Keras has no LiteRT exporter for the JAX backend",
    ("litert", "torch"): "Keras' torch LiteRT exporter needs litert-torch, which pulls transformers and torchao",
}

_OUTPUT_KEYS = ("probabilities", "quality")


def canonical_format(format: str) -> str:
    """``"savedmodel"``, ``"onnx"`` or ``"litert"`` (aliases accepted)."""
    name = str(format).lower().replace("-", "_")
    name = _ALIASES.get(name, name)
    if name not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; use one of: {', '.join(FORMATS)}.")
    return name


def _backend() -> str:
    import keras

    return keras.backend.backend()


def native_support(format: str, backend: str | None = None) -> tuple[bool, str]:
    """``(True, "")`` if ``backend`` (default: current) exports ``format``
    itself, else ``(False, why)``."""
    fmt = canonical_format(format)
    backend = backend or _backend()
    if backend in NATIVE_BACKENDS[fmt]:
        return True, ""
    return False, _WHY_NOT.get((fmt, backend), f"Keras cannot export {fmt} from the {backend} backend")


def _is_slunet(model) -> bool:
    from keras_sl.models.sl_unet.sl_unet import SLUNet

    return isinstance(model, SLUNet)


def _resolve_input_shape(model, input_size=None, format: str | None = None) -> tuple:
    """Image shape without batch, spatial sizes filled in where known."""
    shape = list(getattr(model, "image_shape", None) or model.input_shape[1:])
    channels_last = getattr(model, "data_format", "channels_last") == "channels_last"
    spatial_idx = list(range(len(shape) - 1)) if channels_last else list(range(1, len(shape)))
    size = input_size
    if size is None and any(shape[i] is None for i in spatial_idx):
        meta = getattr(model, "preset_metadata", None) or {}
        size = meta.get("input_size")
    if size is not None:
        size = list(size)[: len(spatial_idx)]
        for i, v in zip(spatial_idx, size):
            if v is None:
                continue
            v = int(v)
            if shape[i] is not None and shape[i] != v:
                raise ValueError(f"input_size {tuple(size)} does not match the model's input shape {tuple(shape)}.")
            shape[i] = v
    multiples = getattr(model, "stride_multiple", None)
    if multiples is not None:
        for i, m in zip(spatial_idx, multiples):
            if shape[i] is not None and shape[i] % m:
                raise ValueError(
                    f"Export input size {[shape[j] for j in spatial_idx]} must be a multiple of the network "
                    f"stride {tuple(multiples)}; pass input_size= (CLI: a preset with a suitable input_size)."
                )
    if format == "litert" and any(shape[i] is None for i in spatial_idx):
        raise ValueError(
            "LiteRT export needs a fixed image size: pass input_size=(H, W) or use a model or preset "
            "whose input size is known (preset_metadata['input_size'])."
        )
    return tuple(shape)


def _spatial(model, shape) -> list:
    channels_last = getattr(model, "data_format", "channels_last") == "channels_last"
    return list(shape[:-1] if channels_last else shape[1:])


def export_graph(model, with_quality: bool = True, input_shape=None):
    """The Keras model that is exported: an SL-UNet's inference graph
    ``image -> {"probabilities", "quality"}`` (``"quality"`` only with
    ``with_quality``), or ``model`` itself for any other model."""
    if not _is_slunet(model):
        return model
    import keras

    image = keras.Input(shape=input_shape or model.image_shape, dtype="float32", name="image")
    outputs = model._inference_model(bool(with_quality))(image)
    if with_quality:
        outputs = dict(zip(_OUTPUT_KEYS, outputs))
    else:
        outputs = {_OUTPUT_KEYS[0]: outputs}
    return keras.Model(image, outputs, name=f"{model.name}_export")


def _input_signature(shape):
    import keras

    return [keras.InputSpec(shape=(None, *shape), dtype="float32", name="image")]


@contextlib.contextmanager
def _portable_graph():
    """Trace the model as plain TensorFlow ops that every converter reads:
    no XLA-compiled norm functions (tf2onnx and TFLite cannot read them,
    ``keras_sl.fast.fused_norm.xla_fusion``), and PReLUs in the
    ``max + min`` form (``keras_sl.fast.tflite_forms.max_min_form``: the TFLite
    converter turns the default form into ``tfl.prelu``, which only takes
    tensors up to rank 4; Keras' own PReLU likewise)."""
    import keras
    from keras import ops

    from keras_sl.fast.fused_norm import xla_fusion
    from keras_sl.fast.tflite_forms import max_min_form
    from keras_sl.layers.prelu import prelu

    def call(self, inputs):  # Keras' PReLU through ours (the max + min form inside max_min_form)
        return prelu(inputs, ops.cast(self.alpha, inputs.dtype))

    original = keras.layers.PReLU.call
    keras.layers.PReLU.call = call
    try:
        with xla_fusion(False), max_min_form():
            yield
    finally:
        keras.layers.PReLU.call = original


def _rename_onnx_outputs(path: Path, names) -> None:
    """Name the ONNX graph outputs (tf2onnx calls them ``Identity:0`` ...)
    and their batch axes ``batch``."""
    import onnx

    proto = onnx.load(str(path))
    graph = proto.graph
    mapping = {out.name: new for out, new in zip(graph.output, names)}
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for value in list(graph.output) + list(graph.input):
        value.name = mapping.get(value.name, value.name)
        dims = value.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    onnx.save(proto, str(path))


def _check_tools(fmt: str) -> None:
    missing = []
    if fmt == "onnx":
        missing = [m for m in ("tf2onnx", "onnx") if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("tensorflow") is None:
        missing.insert(0, "tensorflow")
    if missing:
        raise ImportError(
            f"Exporting {fmt} needs {', '.join(missing)}: pip install \"keras-sl[tensorflow,export]\"."
        )


def _export_native(model, path: Path, fmt: str, with_quality: bool, shape) -> None:
    _check_tools(fmt)
    with _portable_graph():
        _export_traced(model, path, fmt, with_quality, shape)


def _export_traced(model, path: Path, fmt: str, with_quality: bool, shape) -> None:
    graph = export_graph(model, with_quality, shape)
    signature = _input_signature(shape)
    if fmt == "savedmodel":
        graph.export(str(path), format="tf_saved_model", input_signature=signature, verbose=False)
    elif fmt == "onnx":
        graph.export(str(path), format="onnx", input_signature=signature, verbose=False)
        if _is_slunet(model):
            _rename_onnx_outputs(path, _OUTPUT_KEYS if with_quality else _OUTPUT_KEYS[:1])
    else:
        import tensorflow as tf

        # Builtin ops only: the file then runs on any LiteRT interpreter
        # (no Flex delegate needed).
        graph.export(
            str(path), format="litert", input_signature=signature, verbose=False,
            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
        )


def _check_path(path: Path, fmt: str) -> None:
    if fmt == "litert" and path.suffix != ".tflite":
        raise ValueError(f"A LiteRT file must end with .tflite; got {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)


def export_model(
    model,
    path,
    format: str = "savedmodel",
    with_quality: bool = True,
    input_size=None,
    fallback: bool = True,
) -> Path:
    """Export ``model`` to ``path`` as ``savedmodel``, ``onnx`` or ``litert``.

    Args:
        model: a keras_sl model (an SL-UNet exports its inference graph:
            probabilities, and Q with ``with_quality``) or any Keras model
            (exported as is).
        path: a folder for ``savedmodel``, a ``.onnx`` file, a ``.tflite`` file.
        format: ``"savedmodel"``, ``"onnx"`` or ``"litert"``.
        with_quality: SL-UNet only: also output the PQA score Q.
        input_size: ``(H, W)`` to fix; default: the model's input shape or
            its ``preset_metadata["input_size"]`` (dynamic if neither is known;
            LiteRT needs it).
        fallback: if the current backend cannot export ``format`` (see the
            module docstring), re-run the export in a subprocess with
            ``KERAS_BACKEND=tensorflow``; ``False`` raises an error instead.

    Returns:
        ``Path(path)``.
    """
    fmt = canonical_format(format)
    path = Path(path)
    _check_path(path, fmt)
    shape = _resolve_input_shape(model, input_size, fmt)
    ok, why = native_support(fmt)
    if ok:
        _export_native(model, path, fmt, with_quality, shape)
        return path
    if not fallback:
        raise RuntimeError(
            f"Cannot export {fmt} with KERAS_BACKEND={_backend()}: {why}. Run the export with "
            f"KERAS_BACKEND={NATIVE_BACKENDS[fmt][0]}, or call export_model(..., fallback=True) "
            "to do so in a subprocess."
        )
    with tempfile.TemporaryDirectory(prefix="keras_sl_export_") as tmp:
        if hasattr(model, "save_to_preset"):
            meta = dict(getattr(model, "preset_metadata", None) or {})
            source = {"preset": str(model.save_to_preset(Path(tmp) / "preset", metadata=meta))}
        else:
            keras_file = Path(tmp) / "model.keras"
            model.save(keras_file)
            source = {"keras_file": str(keras_file)}
        _export_in_subprocess(source, path, fmt, with_quality, _spatial(model, shape), why)
    return path


def export_preset(preset, path, format: str = "savedmodel", with_quality: bool = True,
                  input_size=None, fallback: bool = True) -> Path:
    """:func:`export_model` for a preset (name, folder or URL); in the
    subprocess fallback the preset folder is used directly."""
    from keras_sl.presets.preset_io import load_preset, read_metadata, resolve

    fmt = canonical_format(format)
    ok, why = native_support(fmt)
    if ok or not fallback:
        return export_model(load_preset(preset), path, fmt, with_quality, input_size, fallback)
    path = Path(path)
    _check_path(path, fmt)
    folder = resolve(preset)
    if input_size is None:
        size = read_metadata(folder).get("input_size")
        input_size = size[:2] if size else None
    _export_in_subprocess({"preset": str(folder)}, path, fmt, with_quality, input_size, why)
    return path


def _export_in_subprocess(source: dict, path: Path, fmt: str, with_quality: bool, input_size, why: str) -> None:
    backend = NATIVE_BACKENDS[fmt][0]
    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError(
            f"Cannot export {fmt} with KERAS_BACKEND={_backend()} ({why}), and the fallback through "
            f"KERAS_BACKEND={backend} needs TensorFlow: pip install \"keras-sl[tensorflow,export]\"."
        )
    job = {**source, "path": str(Path(path).resolve()), "format": fmt, "with_quality": bool(with_quality),
           "input_size": None if input_size is None else [None if v is None else int(v) for v in input_size]}
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "keras_sl.export", json.dumps(job)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"Export of {fmt} in a KERAS_BACKEND={backend} subprocess failed:\n{tail}")


def _worker(job: dict) -> None:
    """Subprocess side of the fallback: load the model and export natively."""
    import keras

    import keras_sl  # noqa: F401 - registers the custom objects

    if "preset" in job:
        from keras_sl.presets.preset_io import load_preset

        model = load_preset(job["preset"])
    else:
        model = keras.saving.load_model(job["keras_file"], compile=False)
    fmt = job["format"]
    shape = _resolve_input_shape(model, job["input_size"], fmt)
    _export_native(model, Path(job["path"]), fmt, job["with_quality"], shape)


# -- verification ---------------------------------------------------------------
def _flatten(outputs) -> dict:
    """Outputs as ``{name: array}`` (dicts) or ``{index: array}``."""
    return {k: np.asarray(v) for k, v in _flatten_tensors(outputs).items()}


def run_export(path, format: str, x) -> dict:
    """Run an exported artifact on ``x``; ``{name or index: array}``."""
    fmt = canonical_format(format)
    x = np.asarray(x, dtype="float32")
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # keep a reference: serve uses its variables
        out = loaded.serve(tf.constant(x))
        if isinstance(out, dict):
            return {k: v.numpy() for k, v in out.items()}
        return _flatten([v.numpy() for v in out] if isinstance(out, (list, tuple)) else out.numpy())
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = session.run(None, {session.get_inputs()[0].name: x})
        if set(names) <= set(_OUTPUT_KEYS):
            return dict(zip(names, values))
        return dict(enumerate(values))
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details().keys()
    out = runner(**{input_name: x})
    if set(out) <= set(_OUTPUT_KEYS):
        return dict(out)
    return {i: out[k] for i, k in enumerate(sorted(out))}


def verify_export(model, path, format: str, x, with_quality: bool = True) -> float:
    """Max absolute difference between the Keras model's output and the
    exported artifact's output on ``x`` (all outputs: probabilities and Q
    for an SL-UNet exported with ``with_quality``).

    SavedModel runs through ``tf.saved_model.load(path).serve``, ONNX through
    onnxruntime, LiteRT through ``ai_edge_litert``'s interpreter (or
    ``tf.lite.Interpreter`` when it is not installed).
    """
    from keras import ops

    x = np.asarray(x, dtype="float32")
    graph = export_graph(model, with_quality, x.shape[1:])
    expected = _flatten({k: ops.convert_to_numpy(v) for k, v in _flatten_tensors(graph(x, training=False)).items()})
    got = run_export(path, format, x)
    if set(expected) != set(got):
        raise ValueError(f"Exported outputs {sorted(map(str, got))} do not match the model's {sorted(map(str, expected))}.")
    diff = 0.0
    for key, ref in expected.items():
        value = np.asarray(got[key])
        if value.shape != ref.shape:
            raise ValueError(f"Output {key!r}: exported shape {value.shape} != Keras shape {ref.shape}.")
        if ref.size:
            diff = max(diff, float(np.max(np.abs(value.astype("float64") - ref.astype("float64")))))
    return diff


def _flatten_tensors(outputs) -> dict:
    if isinstance(outputs, dict):
        return dict(outputs)
    if isinstance(outputs, (list, tuple)):
        return dict(enumerate(outputs))
    return {0: outputs}


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
